"""ingest-bag benchmark: messages/s ingesting a 30 Hz RGB-D recording, sqlite3 and MCAP side by side.

Run: ``.venv/bin/python bench/ingest_bag.py [--views 24] [--repeat 15] [--size 256]`` (about a minute on
2 CPU cores). Prints a markdown table and writes it to ``bench/results/ingest_bag.md``.

- Recording: a ``make-scene`` scene (seed 0) of ``--views`` views at ``--size`` px, played as a 30 Hz
  camera that stops at each view for ``--repeat`` frames, as a robot pausing to look around does: per
  frame an rgb8 Image, a 16UC1 depth Image, a CameraInfo and a /tf odom -> base_link; one /tf_static
  base_link -> camera. Written once per storage plugin with the ``rosbags`` writer (sqlite3; MCAP
  uncompressed, as ``ros2 bag record`` writes both by default).
- Runs: ``ingest-bag`` with its defaults (keyframes by motion and sharpness: the frames that did not
  move are never decoded) and with every frame kept (``--min-translation 0 --min-rotation 0
  --blur-ratio 0``: every colour and depth image decoded and written as PNG). One run each per
  storage plugin, in this process; the time is ``ingest_bag``'s own (opening the bag to the renamed
  scene); messages are the bag's messages on the topics it reads.
"""

from __future__ import annotations

import argparse
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from PIL import Image

from find3d.data.make_scene import make_scene
from find3d.fileio import atomic_write_text, read_json
from find3d.ingest import messages
from find3d.ingest.camera import Intrinsics
from find3d.ingest.config import IngestConfig
from find3d.ingest.ingest_bag import IngestSummary, ingest_bag
from find3d.poses import opengl_to_optical, pose_to_matrix

RESULTS = Path(__file__).resolve().parent / "results"
STORAGES = ("sqlite3", "mcap")
PERIOD_NS = 1_000_000_000 // 30
CAMERA = "camera_color_optical_frame"
#: base_link -> camera: 20 cm forward, 30 cm up, optical axis along the robot's x (REP-103 optical frame)
EXTRINSIC = pose_to_matrix(np.array([0.2, 0.0, 0.3]), np.array([-0.5, 0.5, -0.5, 0.5]))


def recording(scene: Path, repeat: int) -> Iterator[messages.Recorded]:
    """The scene as a 30 Hz RGB-D camera on a robot, in recording order."""
    meta = read_json(scene / "transforms.json")
    info = Intrinsics.from_transforms(meta)
    start = 1_700_000_000 * 1_000_000_000
    static = messages.tf_message([messages.transform_message("base_link", CAMERA, EXTRINSIC, start)])
    yield messages.Recorded("/tf_static", "tf2_msgs/msg/TFMessage", start, static)
    for view, frame in enumerate(meta["frames"]):
        base = opengl_to_optical(np.asarray(frame["transform_matrix"])) @ np.linalg.inv(EXTRINSIC)
        rgb = np.asarray(Image.open(scene / frame["file_path"]).convert("RGB"))
        mm = np.asarray(Image.open(scene / frame["depth_file_path"]))
        for copy in range(repeat):
            stamp = start + (view * repeat + copy + 1) * PERIOD_NS
            moving = messages.tf_message([messages.transform_message("odom", "base_link", base, stamp)])
            yield messages.Recorded("/tf", "tf2_msgs/msg/TFMessage", stamp, moving)
            yield messages.Recorded("/camera/color/image_raw", "sensor_msgs/msg/Image", stamp + 1,
                                    messages.image_message(rgb, "rgb8", stamp, CAMERA)[1])
            yield messages.Recorded("/camera/depth/image_rect_raw", "sensor_msgs/msg/Image", stamp + 2,
                                    messages.depth_message(mm, "16UC1", stamp, CAMERA))
            yield messages.Recorded("/camera/color/camera_info", "sensor_msgs/msg/CameraInfo", stamp + 3,
                                    messages.camera_info_message(info, stamp, CAMERA))


def megabytes(folder: Path) -> float:
    return sum(p.stat().st_size for p in folder.iterdir()) / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--views", type=int, default=24)
    parser.add_argument("--repeat", type=int, default=15, help="30 Hz frames the camera stays at each view")
    parser.add_argument("--size", type=int, default=256)
    args = parser.parse_args()
    runs = {"default keyframes": IngestConfig(),
            "every frame kept": IngestConfig(min_translation=0.0, min_rotation=0.0, blur_ratio=0.0)}
    results: dict[tuple[str, str], IngestSummary] = {}
    sizes: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        make_scene(work / "scene", seed=0, views=args.views, heldout=0, size=args.size)
        for storage in STORAGES:
            bag = messages.write_bag(work / f"bag-{storage}", recording(work / "scene", args.repeat), storage)
            sizes[storage] = megabytes(bag)
            for index, (name, config) in enumerate(runs.items()):
                results[name, storage] = ingest_bag(bag, work / f"out-{storage}-{index}", config)
    rows = ["| run | images kept | messages | sqlite3 (messages/s) | MCAP (messages/s) |",
            "|---|---:|---:|---:|---:|"]
    for name in runs:
        sqlite3, mcap = results[name, "sqlite3"], results[name, "mcap"]
        assert (sqlite3.kept, sqlite3.messages) == (mcap.kept, mcap.messages)  # same recording, same result
        rate = {s: results[name, s].messages / results[name, s].seconds for s in STORAGES}
        rows.append(f"| {name} | {sqlite3.kept} of {sqlite3.images} | {sqlite3.messages} | {rate['sqlite3']:.0f} "
                    f"| {rate['mcap']:.0f} |")
    frames = args.views * args.repeat
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    report = "\n".join([
        "# ingest-bag benchmark", "",
        *rows, "",
        f"Recording: {frames} frames at 30 Hz ({frames / 30:.0f} s) of a {args.size}x{args.size} make-scene scene, "
        f"{args.views} views held {args.repeat} frames each; per frame rgb8 + 16UC1 depth + CameraInfo + /tf. "
        f"Bags: sqlite3 {sizes['sqlite3']:.0f} MiB, MCAP {sizes['mcap']:.0f} MiB. One run each, one process. "
        f"Machine: {os.cpu_count()} CPU cores (load average at the end {load}).", "",
    ])
    print(report)
    atomic_write_text(RESULTS / "ingest_bag.md", report)


if __name__ == "__main__":
    main()
