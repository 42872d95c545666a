"""``find3d query``: a text, image-crop or interleaved query against an exported field.

    find3d query --field DIR "the red mug"
    find3d query --field DIR --image crop.png
    find3d query --field DIR "the mug next to <image:keys.png>"

The query is answered by ``find3d.query.answer.answer`` (as the ROS 2 nodes answer it): encoded
through the FIND interface that embedded the frames (``--checkpoint``, by default the one recorded in
the export's meta.json) against the interface's vocabulary as negatives. The answer is whole 3D
instances (``find3d.query.segments``: FIND's per-frame masks lifted and merged across views) whose mean
embedding reaches ``--threshold``; when none does, the scene holds no such thing: nothing is selected,
and the command says so and names the closest instance ("no 'the mug' in this scene (closest: the
stone, 0.18)"). ``--points`` selects single points instead.
A spatial relation ("next to", "left of", "behind", "on") makes the mask the head entity's instance
that satisfies it. Writes, into ``--out`` (default: the field folder)::

    mask.ply            the selected points with their colours
    query.npz           indices (M,) int64 most relevant first, scores (M,) float32, threshold
    frames.json         {"query", "threshold", "points", "found", "closest": {segment, score, name} | null,
                         "frames": [{rank, index, file_path, score, c2w (4x4 OpenGL, world), fl_x, fl_y,
                         cx, cy, w, h}]}
    relevancy_<rank>_<frame>.png   the relevancy of the selected points over each best frame
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np

from find3d import validate
from find3d.errors import InputError
from find3d.fileio import atomic_open, atomic_write_json
from find3d.query.field import ACCEPTANCE


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("text", nargs="?", default=None,
                        help='text or interleaved query, e.g. "the mug next to <image:keys.png>"')
    parser.add_argument("--field", type=Path, required=True, help="folder written by `find3d export-field`")
    parser.add_argument("--image", type=Path, default=None, help="an image crop to query with instead of text")
    parser.add_argument("--checkpoint", type=Path, default=None,
                        help="FIND interface checkpoint (default: the one embed-frames used, from meta.json)")
    parser.add_argument("--threshold", type=validate.cli(validate.number, low=0.0, high=1.0), default=0.5,
                        help="least relevancy of a selected instance (or point, with --points), in [0, 1]")
    parser.add_argument("--acceptance", type=validate.cli(validate.number, low=0.0, high=1.0), default=ACCEPTANCE,
                        help="least relevancy of the best instance for the query to count as found; below it "
                             f"the answer is 'not found' (default {ACCEPTANCE}: calibrated for the packaged "
                             "interface, bench/results/absent.md)")
    parser.add_argument("--points", action="store_true",
                        help="select single points at relevancy >= --threshold instead of whole 3D instances")
    parser.add_argument("--top-k", type=validate.cli(validate.integer, minimum=0), default=3,
                        help="best frames to report and draw (0: none)")
    parser.add_argument("--negatives", nargs="*", default=None,
                        help="negative phrases (default: every class the interface knows except the query's; "
                             "the bare flag: none)")
    parser.add_argument("--out", type=Path, default=None, help="output folder (default: the field folder)")


def run(args: argparse.Namespace) -> int:
    from find3d.query.answer import answer
    from find3d.query.field import Field

    if (args.text is None) == (args.image is None):
        raise InputError('pass either a text query ("the red mug") or --image CROP, not both or neither.')
    if args.image is not None and not args.image.is_file():
        raise InputError(f"--image {args.image}: not found; pass the path of an image crop.")
    out = args.out or args.field
    # What can be checked without the model is checked first: loading it takes 10-30 s.
    check_query(args.text, args.image)
    check_out(out)
    field = Field.load(args.field)
    interface = load_interface(field, args.checkpoint)
    query: Any = args.text if args.image is None else args.image
    # Interleaved references are resolved from the working directory, like any command-line path.
    answered = answer(field, interface, query, negatives=args.negatives, threshold=args.threshold,
                      top_k=args.top_k, base_dir=Path.cwd(), objects=not args.points, acceptance=args.acceptance)
    result = answered.result
    write_result(field, result, out, str(query))
    if not result.found:
        print(f"{result.describe(str(query))} -> {out}")
        return 0
    best = f"; best frame {result.frames[0].file_path} ({result.frames[0].score:.2f})" if result.frames else ""
    what = (f"the instance {answered.relation!r} its reference" if answered.relation else
            f"{len(answered.objects)} object(s)")
    print(f"{len(result.indices)} of {len(field)} points selected (threshold {result.threshold}; {what}){best} "
          f"-> {out}")
    return 0


def check_query(text: str | None, image: Path | None) -> None:
    """The query's syntax, its ``<image:...>`` files and boxes, or the crop file: whatever fails here would
    fail the same way after the model has loaded."""
    from find3d.fileio import load_image
    from find3d.interface.syntax import parse_query

    if image is not None:
        load_image(image)
    else:
        parse_query(text, Path.cwd())


def check_out(out: Path) -> None:
    """``--out`` must be a folder (new or existing) in a place this process can write to."""
    import tempfile

    if out.exists() and not out.is_dir():
        raise InputError(f"--out {out}: is a file; pass a folder for mask.ply, query.npz, frames.json and the PNGs.")
    existing = next(folder for folder in (out.absolute(), *out.absolute().parents) if folder.exists())
    if not existing.is_dir():
        raise InputError(f"--out {out}: {existing} is a file, so no folder can be made there; pass another --out.")
    try:
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as err:
        raise InputError(f"--out {out}: cannot write into {existing} ({err.strerror}); pass an --out folder you "
                         "can write to.") from err


def load_interface(field: Any, checkpoint: Path | None, device: str = "auto", option: str = "--checkpoint CKPT"
                   ) -> Any:
    """The interface of ``checkpoint``, else of the checkpoint recorded in the export; one whose embedding
    width differs from the field's cannot have embedded it and is refused. ``option``: how the caller's
    user passes a checkpoint (a ROS node's is a parameter), named in the fix."""
    from find3d import Interface

    if checkpoint is not None and not checkpoint.exists():
        raise InputError(f"checkpoint {checkpoint}: not found; pass as {option} an existing interface checkpoint "
                         "(the one `find3d embed-frames` used), or leave it empty for the one the field records.")
    recorded = field.meta.get("checkpoint")
    path = checkpoint or (Path(recorded) if recorded else None)
    if path is None or not path.exists():
        where = "" if path is None else f" ({path} is gone)"
        raise InputError(f"{field.root}: no interface checkpoint recorded{where}; pass {option} "
                         "(the one `find3d embed-frames` used).")
    interface = Interface.from_checkpoint(path, device=device)
    if interface.dim != field.dim:
        raise InputError(f"checkpoint {path} embeds into {interface.dim} dimensions but the field {field.root} "
                         f"holds {field.dim}-d embeddings: it was not made with this interface; pass as {option} "
                         "the checkpoint `find3d embed-frames` used for its scene.")
    recorded_model = field.meta.get("model")
    if recorded_model and recorded_model != interface.fingerprint:
        raise InputError(f"checkpoint {path} (model {interface.fingerprint}) is not the interface the field "
                         f"{field.root} was embedded with (model {recorded_model}): its queries would land in "
                         f"another embedding space; pass as {option} the checkpoint `find3d embed-frames` used, "
                         "or re-embed the scene and re-export the field with this one.")
    return interface


def write_result(field: Any, result: Any, out: Path, query: str) -> None:
    """mask.ply, query.npz, frames.json and the relevancy PNGs (format in the module docstring)."""
    from find3d.query.render import save_relevancy_images

    out.mkdir(parents=True, exist_ok=True)
    result.write_ply(out / "mask.ply", field.points, field.colors)
    with atomic_open(out / "query.npz") as handle:
        np.savez(handle, indices=result.indices.astype(np.int64), scores=result.scores.astype(np.float32),
                 threshold=np.float32(result.threshold))
    frames = [{"rank": rank, "index": hit.index, "file_path": hit.file_path, "score": hit.score,
               "c2w": hit.c2w.tolist(), "fl_x": hit.fx, "fl_y": hit.fy, "cx": hit.cx, "cy": hit.cy,
               "w": hit.width, "h": hit.height} for rank, hit in enumerate(result.frames)]
    closest = None if result.closest is None else {"segment": result.closest.segment, "score": result.closest.score,
                                                   "name": result.closest.name}
    atomic_write_json(out / "frames.json", {"query": query, "threshold": result.threshold,
                                            "points": len(result.indices), "found": result.found,
                                            "closest": closest, "frames": frames})
    save_relevancy_images(field, result, out, query)
