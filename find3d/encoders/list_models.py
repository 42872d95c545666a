"""``find3d models``: the vision / language encoders that can be built, and whether their weights are here.

Checks files only (no torch, no model load), so it answers instantly.
"""

from __future__ import annotations

import argparse

from find3d import encoders
from find3d.encoders.hub import hf_hub_cache


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--kind", choices=("vision", "language", "all"), default="all", help="which encoders to list (default: all)"
    )


def run(args: argparse.Namespace) -> int:
    tables = {"vision": encoders.VISION_ENCODERS, "language": encoders.LANGUAGE_ENCODERS}
    defaults = {"vision": encoders.DEFAULT_VISION, "language": encoders.DEFAULT_LANGUAGE}
    cached = _cached_hub_models()
    for kind, table in tables.items():
        if args.kind not in (kind, "all"):
            continue
        print(f"{kind} encoders (config key encoders.{kind}: NAME):")
        for name, spec in table.items():
            status = "weights present" if encoders.weights_present(spec) else "weights MISSING"
            default = ", default" if name == defaults[kind] else ""
            print(f"  {name:<20} {status:<16} {spec.description}{default}")
        note = f"{len(cached)} model(s) in {hf_hub_cache()}" if cached else f"none cached in {hf_hub_cache()}"
        print(f"  {'hf:<name or path>':<20} {'local only':<16} any Hugging Face {kind} model; {note}")
        for repo in cached:
            print(f"    hf:{repo}")
    return 0


def _cached_hub_models() -> list[str]:
    """``org/name`` of every model folder in the local hub cache."""
    cache = hf_hub_cache()
    if not cache.is_dir():
        return []
    return sorted(
        folder.name[len("models--") :].replace("--", "/")
        for folder in cache.iterdir()
        if folder.name.startswith("models--") and (folder / "snapshots").is_dir()
    )
