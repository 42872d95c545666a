"""ROS 2 query node benchmark: service round trip vs the same query in-process, sustained load, and the
1M-point query against this machine's memory-read floor.

Run: ``.venv/bin/python bench/ros.py [--checkpoint CKPT]`` (about 4 minutes on 2 CPU cores). Prints
markdown tables and writes them to ``bench/results/ros.md``.

- Fields: exports of 10k / 100k / 1M points with random unit features of the interface's width, PCA
  code 32 (export-field's default), 24 cameras on a ring around them; the query is text ("mug") with
  the canonical negatives, at the threshold that selects 1% of the points (a small object's share),
  top-3 frames, answered point by point (``objects=False``, the node's ``whole_objects:=false``): random
  points in a cube hold no objects to segment, and the per-point path is the one whose cost grows with
  the field (a whole-object answer reads one vector per segment once the field is segmented).
  Without ``--checkpoint`` a 2-step demo interface is trained first (cost, not quality,
  is measured here: text vectors are cached after the first query, as in the node).
- Round trip: the node (``lib/find3d/query_node``, its own process, DDS on localhost) answering
  ``~/query`` from a client in this process, p50 / p99 over ``--calls``, beside ``Field.query`` and
  ``answer()`` (``Field.query`` + objects: exactly what the node computes) in this process. The ratio
  round trip / ``Field.query`` is the ROS overhead.
- Sustained: on the 100k field, a client sends ``--rate`` queries/s open-loop for ``--seconds``;
  answered / sent, p99 latency, the node's RSS at start and end.
- Floor: the fastest single-threaded full read of the 1M export's code (``(d + 1) x N`` float32,
  what a query reads), and the 1M ``Field.query`` (mask only, and with frames) as a multiple of it.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
RESULTS = ROOT / "bench" / "results" / "ros.md"
POINT_COUNTS = (10_000, 100_000, 1_000_000)
QUERY = "mug"

from fixtures.ros import ros_client, start_node, stop  # noqa: E402 - the tests' process helpers


def tiny_checkpoint(work: Path) -> Path:
    """A 2-step interface on the demo config: the encoders' and interface's real cost, untrained."""
    from find3d.config import load_config
    from find3d.data.make_data import make_data
    from find3d.train.config import TrainInterfaceConfig
    from find3d.train.loop import train_interface

    make_data(work / "data", images=8, seed=0, size=128, workers=1, overwrite=True)
    overrides = [f"data={work / 'data'}", f"output_dir={work / 'run'}", "max_steps=2", "checkpoint_every=2",
                 "num_workers=0", "batch_size=2", "dataset.augment=false"]
    config = load_config(TrainInterfaceConfig, ROOT / "configs" / "interface" / "demo.yaml", overrides)
    return train_interface(config) / "checkpoints" / "last.pt"


def ring_cameras(count: int = 24, size: int = 96) -> list[dict]:
    """Cameras on a ring 2 m from the origin, looking at it (OpenGL camera-to-world, world z up)."""
    frames = []
    for index in range(count):
        angle = 2 * np.pi * index / count
        eye = np.array([2 * np.cos(angle), 2 * np.sin(angle), 0.8])
        back = eye / np.linalg.norm(eye)
        right = np.cross([0.0, 0.0, 1.0], back)
        right /= np.linalg.norm(right)
        c2w = np.eye(4)
        c2w[:3, 0], c2w[:3, 1], c2w[:3, 2], c2w[:3, 3] = right, np.cross(back, right), back, eye
        frames.append({"file_path": f"images/frame_{index:05d}.png", "c2w": c2w.tolist(), "fl_x": 80.0,
                       "fl_y": 80.0, "cx": size / 2, "cy": size / 2, "w": size, "h": size})
    return frames


def make_field(root: Path, count: int, dim: int, checkpoint: Path) -> None:
    from find3d.field.export import write_export

    rng = np.random.default_rng(count)
    xyz = rng.uniform(-0.5, 0.5, (count, 3)).astype(np.float32)
    features = rng.normal(size=(count, dim)).astype(np.float32)
    frames = ring_cameras()
    write_export(root, xyz, rng.uniform(size=(count, 3)).astype(np.float32), features,
                 rng.normal(size=(len(frames), dim)).astype(np.float32), frames,
                 extra={"checkpoint": str(checkpoint)})


def percentiles(seconds: list[float]) -> tuple[float, float]:
    ms = np.asarray(seconds) * 1000
    return float(np.percentile(ms, 50)), float(np.percentile(ms, 99))


def timed(step, runs: int) -> list[float]:
    out = []
    for _ in range(runs):
        start = time.perf_counter()
        step()
        out.append(time.perf_counter() - start)
    return out


def read_floor(code: np.ndarray, repeats: int = 7) -> float:
    """Fastest single-threaded full read of ``code`` (seconds): a sum touches every byte once."""
    import torch

    tensor = torch.from_numpy(np.ascontiguousarray(code))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return min(timed(lambda: tensor.sum(), repeats))
    finally:
        torch.set_num_threads(threads)


def rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as handle:
        return next(int(line.split()[1]) / 1024 for line in handle if line.startswith("VmRSS"))


def round_trips(field_dir: Path, checkpoint: Path, threshold: float, calls: int, logs: Path,
                load: tuple[float, float] | None = None) -> dict:
    """Round-trip latencies of the node on ``field_dir``; with ``load=(rate, seconds)`` a sustained run."""
    from find3d_interfaces.srv import Query

    process = start_node("query_node", {"field": field_dir, "checkpoint": checkpoint, "whole_objects": False},
                         logs, ROOT / "configs" / "ros" / "query_node.yaml")
    try:
        with ros_client("bench_ros_client") as ros:
            client = ros.create_client(Query, "/find3d_query/query")
            if not client.wait_for_service(timeout_sec=120):
                raise RuntimeError("query node did not come up: " + stop(process)[1][-2000:])
            request = Query.Request(query=QUERY, threshold=threshold, top_k=3)

            def call() -> object:
                future = client.call_async(request)
                ros.executor.spin_until_future_complete(future, timeout_sec=60)
                assert future.done() and future.result().success, "query failed"
                return future.result()

            for _ in range(3):
                call()  # warm-up: text vectors, per-frame visibility, DDS buffers
            if load is None:
                refused = Query.Request(query=" ")  # answered at once with success: false: the transport's cost

                def call_refused() -> None:
                    future = client.call_async(refused)
                    ros.executor.spin_until_future_complete(future, timeout_sec=60)

                return {"round_trip": timed(call, calls), "selected": int(call().selected),
                        "refused": timed(call_refused, calls)}
            return sustained(ros, client, request, process.pid, *load)
    finally:
        stop(process)


def sustained(ros, client, request, pid: int, rate: float, seconds: float) -> dict:
    """Open-loop load: one request every 1/rate s for ``seconds``; each reply records its latency as it
    arrives (a done-callback, so the client's own cost stays flat however many are outstanding)."""
    rss_start = rss_mib(pid)
    latencies: list[float] = []
    sent = 0
    start = time.perf_counter()
    while time.perf_counter() - start < seconds:
        due = start + sent / rate
        while (wait := due - time.perf_counter()) > 0:
            ros.executor.spin_once(timeout_sec=wait)
        sent_at = time.perf_counter()
        client.call_async(request).add_done_callback(lambda _f, t=sent_at: latencies.append(time.perf_counter() - t))
        sent += 1
    deadline = time.perf_counter() + 10  # let the last replies arrive
    while len(latencies) < sent and time.perf_counter() < deadline:
        ros.executor.spin_once(timeout_sec=0.05)
    p99 = percentiles(latencies)[1] if latencies else float("nan")
    return {"sent": sent, "answered": len(latencies), "p99_ms": p99,
            "rss_start": rss_start, "rss_end": rss_mib(pid), "seconds": seconds, "rate": rate}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--checkpoint", type=Path, default=None, help="FIND interface checkpoint")
    parser.add_argument("--calls", type=int, default=100, help="round trips per field size")
    parser.add_argument("--rate", type=float, default=100.0, help="sustained queries per second")
    parser.add_argument("--seconds", type=float, default=30.0, help="sustained run length")
    args = parser.parse_args()
    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    os.environ.setdefault("ROS_DOMAIN_ID", str(101 + os.getpid() % 100))
    import torch

    import find3d
    from find3d.fileio import atomic_write_text
    from find3d.query.answer import answer

    with tempfile.TemporaryDirectory(prefix="bench_ros_") as tmp:
        work = Path(tmp)
        checkpoint = args.checkpoint or tiny_checkpoint(work)
        interface = find3d.Interface.from_checkpoint(checkpoint, device="cpu")
        rows, floor_row, load = [], None, None
        for count in POINT_COUNTS:
            root = work / f"points_{count}"
            make_field(root, count, interface.dim, checkpoint)
            field = find3d.Field.load(root)
            start = time.perf_counter()
            relevancy = field.query(QUERY, interface=interface, top_k_frames=0,  # cold: negatives' cache
                                    objects=False).relevancy
            cold = time.perf_counter() - start
            threshold = float(np.quantile(relevancy, 0.99))
            query = lambda f=field, t=threshold, k=3: f.query(QUERY, interface=interface, threshold=t,  # noqa: E731
                                                            top_k_frames=k, objects=False)
            query()  # builds the per-frame visibility, as the node's warm-up does
            in_process = timed(query, args.calls)
            whole = timed(lambda f=field, t=threshold: answer(f, interface, QUERY, threshold=t, top_k=3, objects=False),
                          args.calls)
            trips = round_trips(root, checkpoint, threshold, args.calls, work / "logs")
            rows.append({"points": count, "query": percentiles(in_process), "answer": percentiles(whole),
                         "trip": percentiles(trips["round_trip"]), "selected": trips["selected"],
                         "refused": percentiles(trips["refused"])})
            print(rows[-1], flush=True)
            if count == 100_000:
                load = round_trips(root, checkpoint, threshold, 0, work / "logs", (args.rate, args.seconds))
                print(load, flush=True)
            if count == 1_000_000:
                floor = read_floor(field.code)
                mask_only = min(timed(lambda f=field, t=threshold: f.query(QUERY, interface=interface, threshold=t,
                                                                          top_k_frames=0, objects=False), 20))
                floor_row = {"floor": floor, "mask": mask_only, "frames": min(in_process), "cold": cold,
                             "bytes": field.code.nbytes}
        text = report(rows, load, floor_row, torch.get_num_threads())
    print(text)
    atomic_write_text(RESULTS, text)


def report(rows: list[dict], load: dict, floor: dict, threads: int) -> str:
    lines = ["# ROS 2 query node", "",
             "`.venv/bin/python bench/ros.py` (protocol in its docstring), 2 CPU cores, one run. "
             f"The query path scores with 1 torch thread (`Field.threads`); this process has {threads}.", "",
             "## Round trip vs in-process (ms, p50 / p99)", "",
             "| points | selected | Field.query | answer() (query + objects) | service round trip | "
             "overhead (trip / Field.query, p50) | refused request's round trip (transport alone) |",
             "|---:|---:|---:|---:|---:|---:|---:|"]
    for row in rows:
        (q50, q99), (a50, a99), (t50, t99), (r50, r99) = row["query"], row["answer"], row["trip"], row["refused"]
        lines.append(f"| {row['points']:,} | {row['selected']:,} | {q50:.1f} / {q99:.1f} | {a50:.1f} / {a99:.1f} | "
                     f"{t50:.1f} / {t99:.1f} | {t50 / q50:.2f}x | {r50:.1f} / {r99:.1f} |")
    lines += ["", f"## Sustained load: {load['rate']:.0f} queries/s for {load['seconds']:.0f} s, 100k points", "",
              "| sent | answered | answered / sent | p99 latency (ms) | node RSS start (MiB) | node RSS end (MiB) |",
              "|---:|---:|---:|---:|---:|---:|",
              f"| {load['sent']} | {load['answered']} | {load['answered'] / load['sent']:.3f} | {load['p99_ms']:.1f} | "
              f"{load['rss_start']:.0f} | {load['rss_end']:.0f} |",
              "", "## 1M points vs the memory-read floor", "",
              "| code bytes | read once (floor, ms) | Field.query, mask only (ms) | x floor | "
              "Field.query + 3 frames (ms) | x floor | first query of the field, new negatives (ms) |",
              "|---:|---:|---:|---:|---:|---:|---:|",
              f"| {floor['bytes'] / 2**20:.0f} MiB | {floor['floor'] * 1e3:.1f} | {floor['mask'] * 1e3:.1f} | "
              f"{floor['mask'] / floor['floor']:.2f}x | {floor['frames'] * 1e3:.1f} | "
              f"{floor['frames'] / floor['floor']:.2f}x | {floor['cold'] * 1e3:.0f} |", "",
              "Best of 20 (mask) / of the round-trip runs (+ frames). A field keeps each set of negatives' "
              "per-point nearest cosine (`Field.nearest_negative`), so only the first query with a new set "
              "pays its products; the first query also encodes the vocabulary negatives once.", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
