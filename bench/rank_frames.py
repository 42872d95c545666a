"""Frame ranking for a widespread answer on a saved map: ``Field.query(..., top_k_frames=3)``, first and warm.

Run: ``.venv/bin/python bench/rank_frames.py WORK [WORK ...]`` on ``bench/scale.py --work WORK`` folders (their
saved map ``WORK/map`` and query ``WORK/queries.npz``: "the domino", which every floor of the drive holds). Each
folder is loaded and queried in a fresh process with one torch thread (``scale.fresh_load``: the first query
includes loading the map's instances' scores, its cell index and the frames' cameras); run it at two commits in
one sitting to compare them. Prints a markdown table.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from scale import fresh_load


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("work", type=Path, nargs="+", help="bench/scale.py --work folders")
    args = parser.parse_args()
    print("| map | points | frames | selected | first query, 3 frames (s) | warm (s) | best frames |")
    print("|---|---:|---:|---:|---:|---:|---|")
    for work in args.work:
        row = fresh_load(work / "map", work / "queries.npz")
        print(f"| {work.name} | {row['points']} | {row['frames']} | {row['selected']} | {row['first_query']:.2f} | "
              f"{row['warm_query']:.2f} | {row['best_frames']} |")


if __name__ == "__main__":
    main()
