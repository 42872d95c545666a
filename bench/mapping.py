"""Live mapping benchmark: keyframes embedded per second, latency from image to map update (and the
embedding's share of it), drops under a 30 Hz stream, and the map's memory against frames (bounded).

Run: ``.venv/bin/python bench/mapping.py [--checkpoint CKPT] [--size 480]`` (a few minutes on 2 CPU
cores). Prints markdown tables and writes them to ``bench/results/mapping.md``.

- What runs: ``find3d.mapping.Mapper``, the code ``mapping_node`` is a thin ROS shell around, in this
  process (DDS transport is measured by the ROS tests, not here), with its defaults (2 cm voxels,
  500k voxels at most) and the keyframes recorded as a scene, as the node does with ``record_dir``.
- Interface: ``--checkpoint`` (default: the CPU interface run's last.pt); without one, an untrained
  interface of the default training config (one training step: speed does not depend on the weights,
  only on the encoders and the input size, which are the defaults).
- Scene: ``make-scene`` seed 0, ``--views`` views at ``--size`` px (square RGB-D, GT depth).
- Embedded/s and latency: every view offered as a keyframe once the previous one is fused (no
  waiting), so latency = image arrival -> the map holds it: embedding + back-projection + fusion +
  recording; medians over the views after one warm-up.
- 30 Hz: the views, round and round, as a 30 Hz camera moving enough for every frame to be a
  keyframe (no recording); the worker keeps only the newest pending keyframe, so the rest are
  dropped, never queued.
- Query: ``answer()`` on the live map after the keyframe run; the first query after the map changed
  also builds the map's ``Field`` snapshot and the keyframes' visibility.
- With the map on disk: the same keyframe run with at most ``SPILL_VOXELS`` voxels in memory, so that
  every keyframe spills (``when_full: spill``, into a temporary folder) and takes back voxels it sees again.
- Memory: the scene's real samples (its first views' embeddings and depth) shifted 1 m further per
  frame, as a robot driving on through new ground, into two maps of the default bound: one spilling to
  disk (voxels, in memory, MiB held, MiB on disk), one evicting (voxels kept, evicted).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
RESULTS = ROOT / "bench" / "results" / "mapping.md"
CHECKPOINT = ROOT / "outputs" / "interface-cpu" / "checkpoints" / "last.pt"
MEMORY_FRAMES = (1, 10, 25, 50, 100, 200, 400)
SPILL_VOXELS = 5000  # voxels in memory for the keyframe run with the map on disk: every keyframe spills


def default_checkpoint(work: Path) -> Path:
    """An untrained interface of the default config: one step on a tiny dataset (module docstring)."""
    from find3d.config import load_config
    from find3d.data.make_data import make_data
    from find3d.train.config import TrainInterfaceConfig
    from find3d.train.loop import train_interface

    make_data(work / "data", images=4, seed=0, size=128, workers=1, overwrite=True)
    config = load_config(TrainInterfaceConfig, None, [
        f"data={work / 'data'}", f"output_dir={work / 'run'}", "batch_size=2", "max_steps=1", "checkpoint_every=1",
        "log_every=1", "num_workers=0", "torch_threads=1", "dataset.augment=false"])
    return train_interface(config) / "checkpoints" / "last.pt"


def keyframe_run(interface, frames: list, work: Path, max_voxels: int | None = None) -> tuple[list, dict]:
    """Each frame offered once the previous is fused; returns the timings and the final stats."""
    from find3d.mapping.fusion import DEFAULT_MAX_VOXELS
    from find3d.mapping.mapper import Mapper, MappingConfig
    from find3d.mapping.record import SceneRecorder

    config = MappingConfig(min_translation=0.0, min_rotation=0.0, blur_ratio=0.0,
                           max_voxels=max_voxels or DEFAULT_MAX_VOXELS)
    shutil.rmtree(work / "recorded", ignore_errors=True)
    mapper = Mapper(interface, config, SceneRecorder(work / "recorded"))
    timings = []
    for frame in frames:
        frame.received = time.perf_counter()
        mapper.offer(frame)
        assert mapper.wait_idle(120)
        timings.append(mapper.timings[-1])
    stats = mapper.stats()
    queries = query_times(interface, mapper.map)
    mapper.close()
    return timings[1:], stats, queries


def query_times(interface, live) -> tuple[float, float]:
    """Seconds of a text query through ``answer()`` on the live map: the first after an update (which
    builds the Field snapshot and the keyframes' visibility), then the median of three more."""
    from find3d.query.answer import answer

    start = time.perf_counter()
    answer(live.field(), interface, "the mug")
    first = time.perf_counter() - start
    again = []
    for _ in range(3):
        start = time.perf_counter()
        answer(live.field(), interface, "the mug")
        again.append(time.perf_counter() - start)
    return first, statistics.median(again)


def stream_run(interface, frames: list, seconds: float, rate: float = 30.0) -> tuple[dict, float]:
    """The views, round and round, as a ``rate`` Hz camera for ``seconds``, every frame a keyframe;
    returns stats and the wall time."""
    from find3d.mapping.mapper import Mapper, MappingConfig

    mapper = Mapper(interface, MappingConfig(min_translation=0.0, min_rotation=0.0, blur_ratio=0.0))
    start = time.perf_counter()
    for index in range(int(seconds * rate)):
        time.sleep(max(0.0, start + index / rate - time.perf_counter()))
        frame = frames[index % len(frames)]
        frame.received = time.perf_counter()
        mapper.offer(frame)
    assert mapper.wait_idle(120)
    wall = time.perf_counter() - start
    stats = mapper.stats()
    mapper.close()
    return stats, wall


def memory_rows(interface, frames: list, dim: int, work: Path) -> list[tuple]:
    """(frames, spilling map: voxels, in memory, MiB, MiB on disk; evicting map: voxels, evicted, MiB) of two
    default-bound maps fed ever new ground (module docstring)."""
    from find3d.mapping.cold import ColdStore
    from find3d.mapping.fusion import VoxelMap, cell_samples

    base = []
    for frame in frames[:4]:
        features = interface.embed_pixels(frame.rgb).features.numpy()
        base.append(cell_samples(features, frame.depth_mm / 1000.0, frame.camera, frame.c2w, frame.rgb))
    spilling, evicting, rows = VoxelMap(dim, cold=ColdStore(work / "spilled", dim)), VoxelMap(dim), []
    for index in range(1, max(MEMORY_FRAMES) + 1):
        samples = base[index % len(base)]
        shifted = type(samples)(samples.xyz + np.array([1.0 * index, 0.0, 0.0]), samples.features, samples.colors)
        spilling.integrate(shifted)
        evicting.integrate(shifted)
        if index in MEMORY_FRAMES:
            rows.append((index, len(spilling), spilling.count, spilling.nbytes / 2**20,
                         spilling.cold.disk_bytes() / 2**20, len(evicting), evicting.evicted, evicting.nbytes / 2**20))
    return rows


def main() -> None:
    from find3d import Interface
    from find3d.data.make_scene import make_scene
    from find3d.fileio import atomic_write_text
    from find3d.mapping.fusion import DEFAULT_MAX_VOXELS, DEFAULT_VOXEL, bound_bytes
    from find3d.mapping.mapper import scene_frames

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", type=Path, default=CHECKPOINT, help="FIND interface checkpoint")
    parser.add_argument("--views", type=int, default=16)
    parser.add_argument("--size", type=int, default=480, help="camera image side in px (square)")
    parser.add_argument("--stream-seconds", type=float, default=10.0, help="length of the 30 Hz stream")
    args = parser.parse_args()
    import torch

    torch.set_num_threads(1)  # as the node runs beside a robot's other processes
    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        if args.checkpoint.exists():
            checkpoint, source = work / "interface.pt", f"`{args.checkpoint}`"
            shutil.copyfile(args.checkpoint, checkpoint)  # a snapshot: a running training rotates them
        else:
            checkpoint, source = default_checkpoint(work), "untrained, default training config (1 step)"
        interface = Interface.from_checkpoint(checkpoint, device="cpu")
        make_scene(work / "scene", seed=0, views=args.views, heldout=0, size=args.size)
        frames = scene_frames(work / "scene")
        grid = tuple(interface.embed_pixels(frames[0].rgb).features.shape)
        timings, stats, (first_query, query) = keyframe_run(interface, frames, work)
        disk_timings, disk_stats, (disk_first, disk_query) = keyframe_run(interface, frames, work, SPILL_VOXELS)
        stream, wall = stream_run(interface, frames, args.stream_seconds)
        memory = memory_rows(interface, frames, interface.dim, work)
    disk_latency = statistics.median(t.latency for t in disk_timings)
    disk_fusion = statistics.median(t.latency - t.embed - t.record for t in disk_timings)
    latency = statistics.median(t.latency for t in timings)
    embed = statistics.median(t.embed for t in timings)
    record = statistics.median(t.record for t in timings)
    rows = [
        "| measure | result |", "|---|---:|",
        f"| keyframes embedded and fused per second, one after another | {1.0 / latency:.2f} |",
        f"| latency image -> map update (median) | {1e3 * latency:.0f} ms |",
        f"| of which embedding (Interface.embed_pixels) | {1e3 * embed:.0f} ms ({100 * embed / latency:.0f} %) |",
        f"| of which recording the keyframe (2 PNGs + transforms.json, atomic) | {1e3 * record:.0f} ms |",
        f"| of which back-projection and fusion | {1e3 * (latency - embed - record):.0f} ms |",
        f"| 30 Hz stream for {wall:.0f} s, every frame a keyframe: in / embedded / dropped | {stream['keyframes']} / "
        f"{stream['embedded']} / {stream['dropped']} ({stream['embedded'] / wall:.2f} embedded/s) |",
        f"| map after {len(frames)} views | {stats['voxels']} voxels, {stats['map_bytes'] / 2**20:.1f} MiB |",
        f"| query on it (answer(), text + 4 negatives): first after an update / again | {1e3 * first_query:.0f} ms / "
        f"{1e3 * query:.0f} ms |",
        f"| with the map on disk (at most {SPILL_VOXELS} voxels in memory): keyframes embedded and fused per second | "
        f"{1.0 / disk_latency:.2f} ({disk_latency / latency:.2f}x the latency in memory) |",
        f"| of which back-projection, fusion and spilling | {1e3 * disk_fusion:.0f} ms |",
        f"| map after {len(frames)} views, on disk | {disk_stats['voxels']} voxels ({disk_stats['in_memory']} in "
        f"memory, {disk_stats['spilled']} spilled in all, {disk_stats['disk_bytes'] / 2**20:.1f} MiB on disk), "
        f"{disk_stats['evicted']} evicted |",
        f"| query on it: first after an update (its field written to disk) / again | {1e3 * disk_first:.0f} ms / "
        f"{1e3 * disk_query:.0f} ms |",
    ]
    bound = bound_bytes(interface.dim, DEFAULT_MAX_VOXELS) / 2**20
    memory_table = ["| frames fused | spilling: voxels | in memory | memory (MiB) | on disk (MiB) | evicting: voxels "
                    "| evicted | memory (MiB) |", "|---:|---:|---:|---:|---:|---:|---:|---:|",
                    *["| " + " | ".join(f"{v:.1f}" if isinstance(v, float) else str(v) for v in row) + " |"
                      for row in memory]]
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    report = "\n".join([
        "# Live mapping benchmark", "",
        f"Scene: make-scene seed 0, {len(frames)} views at {args.size}x{args.size} px (RGB-D); pixel embeddings "
        f"{grid[0]}x{grid[1]}x{grid[2]} per keyframe (stride 4 of the interface's canvas); map voxels "
        f"{100 * DEFAULT_VOXEL:g} cm, at most {DEFAULT_MAX_VOXELS} in memory (bound {bound:.0f} MiB at D = "
        f"{interface.dim}). "
        f"Interface: {source}. One torch thread. Machine: {os.cpu_count()} CPU cores (load average at the end "
        f"{load}).", "",
        *rows, "",
        "Map memory against frames, each frame new ground (a robot driving on), default bound in memory; the "
        "spilling map keeps every voxel, the evicting one forgets the oldest:", "",
        *memory_table, "",
    ])
    print(report)
    atomic_write_text(RESULTS, report)


if __name__ == "__main__":
    main()
