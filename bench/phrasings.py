"""Which wordings a 3D query understands: each user wording's nearest vocabulary class, and whether the query
takes that class as its own (``find3d.query.field.own_classes``, which decides the query's negatives).

Run: ``.venv/bin/python bench/phrasings.py [--checkpoint CKPT]`` (seconds; text only, no scene). Writes
``bench/results/phrasings.md`` and prints it.

A wording is understood when it takes the class it means as its own (it is then answered with instances of
that class) and an absent thing takes none (it can then be answered "not found"). Wordings: eval-3d's
("the <category>" and ``PHRASINGS``' other one), the calibration's (``CALIBRATION_PHRASINGS``), and the
absent things of both (``OUT_OF_VOCABULARY``, ``CALIBRATION_ABSENT``). Columns, side by side:

- *with article*: the words as the class prompt received them before ``Interface.encode_query`` dropped a
  leading article ("a photo of a the tabletop."); *now*: ``encode_query`` ("a photo of a tabletop.");
- *frozen language model*: the nearest class in the language encoder's own sentence space (its last layer
  mean-pooled over the tokens, as sentence-transformers reads all-MiniLM-L6-v2), i.e. what a rule on the
  frozen model instead of the interface could know.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch
from calibrate_absent import CALIBRATION_ABSENT, CALIBRATION_PHRASINGS  # bench/calibrate_absent.py

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results" / "phrasings.md"
ARTICLE = re.compile(r"^(?:the|an?)\s+")  # only to strip the column labels: the product's own rule is in encode_query


def wordings() -> list[tuple[str, str, str | None]]:
    """(set, wording, the category it means or None for an absent thing)."""
    from find3d.query.eval_3d import OUT_OF_VOCABULARY, PHRASINGS

    return ([("eval-3d, class name", f"the {c}", c) for c in PHRASINGS]
            + [("eval-3d, other wording", q, c) for c, q in PHRASINGS.items()]
            + [("calibration, other wording", q, c) for c, q in CALIBRATION_PHRASINGS.items()]
            + [("eval-3d, absent", q, None) for q in OUT_OF_VOCABULARY]
            + [("calibration, absent", q, None) for q in CALIBRATION_ABSENT])


def sentence_vectors(interface: Any, texts: list[str]) -> np.ndarray:
    """(n, H) unit vectors of the frozen language encoder: its tokens mean-pooled (sentence-transformers' pooling)."""
    with torch.no_grad():
        tokens = interface.model.language(texts)
    mask = tokens.mask[..., None].float()
    pooled = (tokens.tokens * mask).sum(1) / mask.sum(1)
    return torch.nn.functional.normalize(pooled, dim=1).numpy()


def judge(interface: Any, vector: np.ndarray, meant: str | None) -> tuple[str, float, float, bool]:
    """(nearest class, its cosine, its lead over the second, understood?) of a query vector."""
    from find3d.query.field import own_classes

    names = interface.class_names
    similarity = interface.vocabulary_vectors() @ vector
    first, second = np.argsort(-similarity)[:2]
    own = own_classes(interface, vector)
    understood = (meant in names and bool(own[names.index(meant)])) if meant else not own.any()
    return names[first], float(similarity[first]), float(similarity[first] - similarity[second]), understood


def main() -> None:
    from find3d import Interface

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", type=Path, default=ROOT / "find3d" / "assets" / "interface-cpu.pt")
    args = parser.parse_args()
    interface = Interface.from_checkpoint(args.checkpoint)
    prompt = interface.model.interface.config.class_prompt
    rows = wordings()
    with torch.no_grad():
        before = interface.model.encode_texts([prompt.format(text) for _, text, _ in rows], kind="class")
    before = before.float().numpy()
    before /= np.linalg.norm(before, axis=1, keepdims=True)
    names = interface.class_names
    frozen = sentence_vectors(interface, [ARTICLE.sub("", text) for _, text, _ in rows])
    frozen_classes = sentence_vectors(interface, names)
    table, counts = [], {}
    for (group, text, meant), old in zip(rows, before):
        then = judge(interface, old, meant)
        now = judge(interface, interface.encode_query(text).numpy(), meant)
        lm = frozen_classes @ frozen[len(table)]
        lm_first, lm_second = np.sort(lm)[::-1][:2]
        tally = counts.setdefault(group, [0, 0, 0])
        tally[0], tally[1], tally[2] = tally[0] + then[3], tally[1] + now[3], tally[2] + 1
        cell = lambda r: f"{r[0]} {r[1]:.2f} / +{r[2]:.2f} {'yes' if r[3] else '**no**'}"  # noqa: E731
        table.append(f"| {group} | {text} | {meant or '-'} | {cell(then)} | {cell(now)} | "
                     f"{names[int(np.argmax(lm))]} {lm_first:.2f} / +{lm_first - lm_second:.2f} |")
    lines = ["# Which wordings a 3D query understands", "",
             f"Interface `{args.checkpoint.name}`, language encoder `{interface.model.language.name}`. Command: "
             "`.venv/bin/python bench/phrasings.py`. A cell: nearest vocabulary class, its cosine / lead over the "
             "second, and whether the wording is understood (takes the class it means as its own, or for an absent "
             "thing none: `find3d.query.field.own_classes`). Method: module docstring of bench/phrasings.py.", "",
             "| wordings | understood, with article | understood, now |", "|---|---:|---:|",
             *[f"| {group} | {c[0]} / {c[2]} | {c[1]} / {c[2]} |" for group, c in counts.items()], "",
             "| set | wording | means | interface, with article | interface, now | frozen language model |",
             "|---|---|---|---|---|---|", *table]
    RESULTS.write_text("\n".join(lines) + "\n", encoding="utf-8")
    print(RESULTS.read_text(encoding="utf-8"))


if __name__ == "__main__":
    main()
