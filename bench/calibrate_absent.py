"""Calibrate "not found": the acceptance threshold of ``Field.query`` (``find3d.query.field.ACCEPTANCE``).

Run: ``.venv/bin/python bench/calibrate_absent.py [--checkpoint CKPT] [--seeds 201 202 203]`` (a few
minutes on 2 CPU cores). Writes ``bench/results/absent.md`` and prints the same tables.

A query is found when its best 3D instance reaches the acceptance relevancy (against the vocabulary
negatives ``Field.query`` uses). Too low a value finds things that are not there; too high a value loses
things that are. The value is chosen on held-out scenes, never on the benchmark's (``bench/field.py``'s
seeds 101-103 and 111-113), and with phrasings that eval-3d never asks:

- Scenes: ``make-scene --close --repeat`` with and without ``--clutter`` for each ``--seeds`` (20 + 5
  views, 256 px), embedded by the interface; instances from the fusion map of the training views
  (``find3d.mapping.fusion``: the live map's code and the instances every consumer reads), which needs
  no field training, so the calibration runs in minutes.
- Present queries: every category on the table, as "the <category>" and as ``CALIBRATION_PHRASINGS``'
  other wording. Absent queries: every thing category the interface knows that is not on the table,
  and ``CALIBRATION_ABSENT`` (things no scene holds; none of eval-3d's ``OUT_OF_VOCABULARY``).
- Score of a query: its best instance's relevancy. For each candidate value, the share of present
  queries found and of absent queries rejected; the chosen value maximises the smaller of the two
  (ties: the larger sum of both).
- What limits it: the share of instances (matched to one ground-truth object with purity >= 0.8) whose
  nearest vocabulary class is their own, and the most frequent confusions: a query can only be told
  from an absent one as well as the interface recognises what the instances are.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results" / "absent.md"
SEEDS = (201, 202, 203)
CANDIDATES = np.round(np.arange(0.05, 0.96, 0.05), 2)
#: a second wording per category, none of them eval-3d's PHRASINGS
CALIBRATION_PHRASINGS = {
    "mug": "the coffee mug", "duck": "the toy duck", "teddy bear": "the plush bear", "soccer ball": "the football ball",
    "lego brick": "the lego block", "wooden block": "the wood block", "domino": "the domino piece",
    "cube": "the small cube", "ball": "the small ball", "tray": "the serving tray", "robot": "the toy robot",
    "robot arm": "the robot manipulator", "toy car": "the toy racecar", "bunny": "the toy rabbit",
    "ring": "the donut shape", "stone": "the pebble", "table": "the desk",
}
#: things no scene holds, none of them in eval-3d's OUT_OF_VOCABULARY
CALIBRATION_ABSENT = ("the keyboard", "the toothbrush", "the bottle", "the book", "the chair", "the spoon",
                      "the apple", "the remote control", "the headphones", "the candle", "the shoe", "the lamp")


def make_scenes(work: Path, seeds: list[int], interface: Any, checkpoint: Path) -> list[Path]:
    """The calibration scenes under ``work``, embedded (a scene already there is reused, embed-frames resumes)."""
    from find3d.data.make_scene import make_scene
    from find3d.field.embeddings import embed_frames

    scenes = []
    for seed in seeds:
        for clutter in (False, True):
            scene = work / f"seed{seed}{'_clutter' if clutter else ''}"
            if not (scene / "transforms.json").is_file():
                make_scene(scene, seed=seed, views=20, heldout=5, repeat=True, close=True, clutter=clutter,
                           overwrite=True)
            embed_frames(scene, interface, checkpoint=str(checkpoint.resolve()))
            scenes.append(scene)
    return scenes


def recognition(interface: Any, scene: Any, field: Any) -> list[tuple[str, str]]:
    """(true category, nearest vocabulary class) of every instance that is one ground-truth object."""
    from find3d.query.eval_3d import MATCH_DISTANCE, nearest_match

    match = nearest_match(field.points, scene.gt_xyz, MATCH_DISTANCE)
    predicted = np.where(match >= 0, field.segments[np.maximum(match, 0)], -1)
    names, vectors = interface.class_names, interface.vocabulary_vectors()
    out = []
    for label, vector in enumerate(field.segment_vectors()):
        truth = scene.gt_object[predicted == label]
        if len(truth) < 20:
            continue
        ids, counts = np.unique(truth, return_counts=True)
        if counts.max() >= 0.8 * len(truth):
            truth_name = scene.objects[int(ids[np.argmax(counts)])]["category"]
            out.append((truth_name, names[int(np.argmax(vectors @ vector))]))
    return out


def fusion_field(scene_dir: Path) -> tuple[Any, Any]:
    """The scene's ground truth and the fusion map of its training views, as a ``Field`` with its instances."""
    from find3d.field.embeddings import STORE_DIRNAME, EmbeddingStore
    from find3d.mapping.fusion import VoxelMap
    from find3d.query.eval_3d import Scene, frame_samples
    from find3d.query.field import Field

    scene = Scene.load(scene_dir)
    store = EmbeddingStore.open(scene_dir / STORE_DIRNAME)
    fused = VoxelMap(store.meta.dim)
    for path in scene.transforms["train_filenames"]:
        fused.integrate(frame_samples(scene, store, path))
    meta = {"dim": fused.dim, "count": len(fused), "frames": []}
    return scene, Field(scene_dir, meta, fused.points(), fused.colors(), fused.features(),
                        np.zeros((0, fused.dim), np.float32), None, None, fused.segments())


def best_scores(interface: Any, scene: Any, field: Any) -> dict[str, list[tuple[str, float]]]:
    """Per kind ("present" / "absent"), each query with its best instance's relevancy."""
    from find3d.query.field import encode, encode_negatives

    present = set(scene.categories())
    queries = {"present": [f"the {c}" for c in present] + [CALIBRATION_PHRASINGS[c] for c in present],
               "absent": [f"the {name}" for name, thing in zip(interface.class_names, interface.isthing)
                          if thing and name not in present] + list(CALIBRATION_ABSENT)}
    out: dict[str, list[tuple[str, float]]] = {}
    for kind, texts in queries.items():
        out[kind] = []
        for text in texts:
            vector = encode(interface, text)
            scores = field.instance_relevancy(vector, encode_negatives(interface, None, query_vector=vector))
            out[kind].append((text, float(scores.max()) if len(scores) else 0.0))
    return out


def main() -> int:
    from find3d import Interface

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", type=Path, default=ROOT / "find3d" / "assets" / "interface-cpu.pt")
    parser.add_argument("--seeds", type=int, nargs="+", default=list(SEEDS))
    parser.add_argument("--keep", type=Path, default=None,
                        help="keep the scenes in this folder (reusing those already there), not in a temporary one")
    args = parser.parse_args()
    interface = Interface.from_checkpoint(args.checkpoint)
    rows = []  # (scene, kind, query, score)
    recognised: list[tuple[str, str]] = []
    with tempfile.TemporaryDirectory() as temporary:
        work = args.keep or Path(temporary)
        for scene_dir in make_scenes(work, args.seeds, interface, args.checkpoint):
            scene, field = fusion_field(scene_dir)
            recognised += recognition(interface, scene, field)
            for kind, scored in best_scores(interface, scene, field).items():
                rows += [(scene_dir.name, kind, text, score) for text, score in scored]
    present = np.array([r[3] for r in rows if r[1] == "present"])
    absent = np.array([r[3] for r in rows if r[1] == "absent"])
    table = [(float(t), float(np.mean(present >= t)), float(np.mean(absent < t))) for t in CANDIDATES]
    chosen = max(table, key=lambda row: (min(row[1], row[2]), row[1] + row[2]))
    confusions = Counter((truth, guess) for truth, guess in recognised if truth != guess).most_common(5)
    accuracy = float(np.mean([truth == guess for truth, guess in recognised])) if recognised else 0.0
    lines = [
        "# Calibrating \"not found\" (`find3d.query.field.ACCEPTANCE`)", "",
        f"Scenes: `make-scene --close --repeat` with and without `--clutter`, seeds {', '.join(map(str, args.seeds))} "
        f"(20 + 5 views, 256 px; never used by the benchmarks), instances of each fusion map. Interface: "
        f"`{args.checkpoint.relative_to(ROOT) if args.checkpoint.is_relative_to(ROOT) else args.checkpoint}`. "
        f"Queries: {len(present)} present ('the <category>' and a second wording), {len(absent)} absent "
        "(missing catalogue things and 12 phrases outside the vocabulary). Command: "
        f"`.venv/bin/python bench/calibrate_absent.py --seeds {' '.join(map(str, args.seeds))}`.", "",
        "| acceptance | present found | absent rejected |", "|---:|---:|---:|",
        *[f"| {'**' if row is chosen else ''}{row[0]:.2f}{'**' if row is chosen else ''} | {row[1]:.3f} | "
          f"{row[2]:.3f} |" for row in table],
        "", f"Chosen: **{chosen[0]:.2f}** (the larger of the two worst shares: {min(chosen[1], chosen[2]):.3f}).", "",
        "Present queries not found at that value: " + (", ".join(
            f"{r[0]} '{r[2]}' ({r[3]:.2f})" for r in rows if r[1] == "present" and r[3] < chosen[0]) or "none") + ".",
        "", "Absent queries found at that value: " + (", ".join(
            f"{r[0]} '{r[2]}' ({r[3]:.2f})" for r in rows if r[1] == "absent" and r[3] >= chosen[0]) or "none") + ".",
        "", f"What limits it: of {len(recognised)} instances that are one object each, {accuracy:.1%} have their own "
        "category as the nearest vocabulary class; most frequent confusions (true -> nearest, count): "
        + ", ".join(f"{truth} -> {guess} ({count})" for (truth, guess), count in confusions) + ".",
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    RESULTS.write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
