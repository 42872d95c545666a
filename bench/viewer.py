"""Viewer benchmark: what find3d's query outputs add to a frame of nerfstudio's viewer, and what a new query
costs to encode (find3d.field.viewer).

Run: ``.venv/bin/python bench/viewer.py --config RUN/config.yml [--export DIR] [--size 128]`` on a trained
``find-field`` run whose frames the packaged interface embedded. Prints markdown tables and writes them to
``bench/results/viewer.md``.

- Frame: ``model.get_outputs_for_camera`` (exactly what the viewer's render thread and ``ns-render`` call)
  for a training camera rescaled to ``--size`` px, best of ``--repeats`` rounds that alternate the three:
  without a query (the RGB frame: every output nerfstudio shows, the feature image included), with a query
  answered per pixel (adds ``relevancy`` and ``composited``), and answered with whole objects on the export
  (adds the splat of the selected points); and find3d's part alone (``FieldViewer.add_outputs`` on the RGB
  frame's outputs), which is small enough to time steadily where whole frames vary with the machine's other
  jobs. The query is answered before timing: the viewer answers it on its worker, once per change, not per
  frame. Goal: at most 1.5x the RGB frame.
- Encoding: ``find3d.query.field.encode`` of new text queries (never seen before: the interface caches
  text vectors), of an image-crop query (``<image:frame.png#box=...>``), and the whole change as the viewer's
  worker does it (``Asker.ask``: encoding, negatives, whole-object answer), median over the queries, after
  the first query (which also loads the interface and embeds its vocabulary, reported apart), on one
  torch thread as the worker runs them. Goal: a new query encoded in under 0.5 s.

Wall-clock times on a shared machine: the table also gives the process's CPU time and the load average.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results" / "viewer.md"
TEXTS = ("the red mug", "a small robot", "the wooden tray", "a green ball", "the teddy bear", "the bunny",
         "a toy car", "the soccer ball")
CHANGES = ("a blue chair", "the green lamp", "an old book", "the small cup", "a white duck", "the yellow cube",
           "a plastic bottle", "the orange ring")  # other words: the interface caches text vectors


def timed(function, repeats: int) -> tuple[float, float]:
    """(best wall-clock s, its CPU s) over ``repeats`` calls."""
    best = (float("inf"), 0.0)
    for _ in range(repeats):
        wall, cpu = time.perf_counter(), time.process_time()
        function()
        best = min(best, (time.perf_counter() - wall, time.process_time() - cpu))
    return best


def median(samples: list[tuple[float, float]]) -> str:
    """'wall | CPU' medians of (wall, CPU) samples, as table cells."""
    return f"{statistics.median(s[0] for s in samples):.3f} | {statistics.median(s[1] for s in samples):.3f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", type=Path, required=True, help="config.yml of a trained find-field run")
    parser.add_argument("--export", type=Path, default=None,
                        help="its export-field folder (default: found next to the run, as the viewer does)")
    parser.add_argument("--query", default="the tray", help="the query drawn in the frames")
    parser.add_argument("--size", type=int, default=128, help="frame height and width in px")
    parser.add_argument("--repeats", type=int, default=3, help="frames per mode (best is kept)")
    parser.add_argument("--frame", type=int, default=0, help="training camera index")
    args = parser.parse_args()

    import torch
    from nerfstudio.utils.eval_utils import eval_setup

    from find3d.field.viewer import Asker, FieldViewer, Settings, find_export
    from find3d.query.field import encode

    torch.set_num_threads(max(1, len(os.sched_getaffinity(0))))
    _, pipeline, _, step = eval_setup(args.config, test_mode="inference")
    model = pipeline.model
    export = args.export or find_export(args.config)
    if export is None:
        raise SystemExit(f"no export of {args.config} found; pass --export DIR (find3d export-field's --out)")
    dataset = pipeline.datamanager.train_dataset
    camera = dataset.cameras[args.frame:args.frame + 1]
    camera.rescale_output_resolution(args.size / float(camera.height[0, 0]))
    height, width = int(camera.height[0, 0]), int(camera.width[0, 0])

    def frame() -> None:
        with torch.no_grad():
            model.get_outputs_for_camera(camera)

    # One set of controls per mode, each answered once (as the viewer's worker answers once per change); the
    # rounds alternate the modes, so that the machine's other jobs weigh on each alike.
    modes = (("RGB (no query)", {"query": ""}), ("relevancy, per pixel", {"query": args.query, "objects": False}),
             ("relevancy, whole objects", {"query": args.query, "objects": True, "export": str(export)}))
    viewers = []
    for _, settings in modes:
        model.find3d = FieldViewer(dataset.metadata, model.feature_dim)
        model.find3d.set(**settings)
        frame()  # answers the query and warms up
        viewers.append(model.find3d)
    best = [(float("inf"), 0.0)] * len(modes)
    for _ in range(args.repeats):
        for index, viewer in enumerate(viewers):
            model.find3d = viewer
            best[index] = min(best[index], timed(frame, 1))
    # find3d's part alone: the outputs added to the RGB frame's outputs, many times (small, so it is timed
    # steadily where whole frames on a shared machine are not).
    model.find3d = viewers[0]
    with torch.no_grad():
        plain = model.get_outputs_for_camera(camera)
    part = [0.0] + [timed(lambda viewer=viewer: viewer.add_outputs(dict(plain), camera), 5 * args.repeats)[0]
                    for viewer in viewers[1:]]
    rows = [(name, *best[index], part[index], viewer.current().message if viewer.current() else "")
            for index, ((name, _), viewer) in enumerate(zip(modes, viewers))]
    base = rows[0][1]

    # Queries are encoded on the viewer's worker thread, which uses one torch thread (FieldViewer._work).
    torch.set_num_threads(1)
    asker = Asker(dataset.metadata, model.feature_dim)
    first = timed(lambda: asker.ask(Settings(query="a chair", export=str(export)), None, ROOT), 1)
    interface = asker.interface()
    texts = [timed(lambda text=text: encode(interface, text), 1) for text in TEXTS]
    image = dataset.image_filenames[args.frame]
    crop = f"<image:{image}#box=8,8,{width // 2},{height // 2}>"
    crops = [timed(lambda: encode(interface, crop), 1) for _ in range(3)]
    changes = [timed(lambda text=text: asker.ask(Settings(query=text, export=str(export)), None, ROOT), 1)
               for text in CHANGES]
    load = os.getloadavg()[0]

    lines = [
        "# Viewer: query outputs and query encoding",
        "",
        f"`.venv/bin/python bench/viewer.py --config RUN/config.yml --size {args.size}` (protocol in its docstring), "
        f"{len(os.sched_getaffinity(0))} CPU cores shared with other jobs (load average {load:.1f} at the end). "
        f"Field: {len(dataset)} training views of {int(dataset.cameras.width[0, 0])} px, {step + 1} iterations, "
        f"export of {len(asker.open_export(Path(export))[0])} points; query {args.query!r}.",
        "",
        f"## A viewer frame, {width}x{height} px (best of {args.repeats})",
        "",
        "| outputs | frame, wall (s) | frame, CPU (s) | x RGB frame | find3d's outputs alone (s) | "
        "x RGB frame, from them | answer |",
        "|---|---:|---:|---:|---:|---:|---|",
        *[f"| {name} | {wall:.2f} | {cpu:.2f} | {wall / base:.2f}x | {alone:.3f} | {(base + alone) / base:.2f}x | "
          f"{message} |" for name, wall, cpu, alone, message in rows],
        "",
        "Whole frames on a shared machine vary with the other jobs by more than find3d's part; that part alone "
        "(`FieldViewer.add_outputs` on the RGB frame's outputs, best of many) gives the steadier ratio "
        "(RGB frame + part) / RGB frame.",
        "",
        "## A new query (s; median, wall / CPU)",
        "",
        "| what | wall | CPU |",
        "|---|---:|---:|",
        f"| text, never seen before ({len(texts)} phrases; the goal: under 0.5 s) | {median(texts)} |",
        f"| image crop `<image:...#box=...>` (3 times: crops are not cached) | {median(crops)} |",
        f"| the whole change as the viewer's worker answers it (encoding, negatives, whole-object answer) | "
        f"{median(changes)} |",
        f"| the first query (loads the interface, embeds its vocabulary as negatives) | {median([first])} |",
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    RESULTS.write_text(text)
    print(f"relevancy frame / RGB frame: {(base + rows[1][3]) / base:.2f}x per pixel, "
          f"{(base + rows[2][3]) / base:.2f}x whole objects; a new text query encoded in "
          f"{statistics.median(t[0] for t in texts):.3f} s -> {RESULTS}")


if __name__ == "__main__":
    main()
