"""Frame ranking for a widespread answer on a saved map: ``Field.query(..., top_k_frames=3)``, first and warm.

Run: ``.venv/bin/python bench/rank_frames.py WORK [WORK ...]`` on ``bench/scale.py --work WORK`` folders (their
saved map ``WORK/map`` and query ``WORK/queries.npz``: "the domino", which every floor of the drive holds). Each
folder is timed in a fresh process, one torch thread; run it at two commits in one sitting to compare them.
Prints a markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path


def child(work: Path) -> None:
    """Load the map and time its first and a warm ranked query; print one JSON line."""
    import numpy as np
    import torch

    from find3d.query.field import Field

    torch.set_num_threads(1)
    with np.load(work / "queries.npz") as data:
        query, negatives = data["query"], data["negatives"]
    field = Field.load(work / "map")
    field.query(query, negatives, top_k_frames=0)  # the instances' scores: not what is measured here
    times = []
    for _ in range(2):
        start = time.perf_counter()
        result = field.query(query, negatives, top_k_frames=3)
        times.append(time.perf_counter() - start)
    print(json.dumps({"points": len(field), "frames": len(field.frames), "selected": len(result.indices),
                      "first": times[0], "warm": times[1], "best": [hit.index for hit in result.frames]}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("work", type=Path, nargs="+", help="bench/scale.py --work folders")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.work[0])
        return
    print("| map | points | frames | selected | first query, 3 frames (s) | warm (s) | best frames |")
    print("|---|---:|---:|---:|---:|---:|---|")
    for work in args.work:
        out = subprocess.run([sys.executable, __file__, "--child", str(work)], check=True, capture_output=True,
                             text=True, env={**os.environ, "OMP_NUM_THREADS": "1"}).stdout
        row = json.loads(out.strip().splitlines()[-1])
        print(f"| {work.name} | {row['points']} | {row['frames']} | {row['selected']} | {row['first']:.2f} | "
              f"{row['warm']:.2f} | {row['best']} |")


if __name__ == "__main__":
    main()
