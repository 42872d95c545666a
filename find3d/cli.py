"""The ``find3d`` command line.

Subcommands live next to the stage they drive; this module only knows their names, one-line
descriptions and where they are, so that ``find3d --help`` stays instant (no torch import) and a
subcommand imports only what it needs. Each target module provides ``configure(parser)`` and
``run(args) -> int``.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import Any, NamedTuple

from find3d.errors import Find3dError


class Command(NamedTuple):
    module: str
    summary: str


# Registered here only once they do real work (no stubs).
COMMANDS: dict[str, Command] = {
    "demo": Command("find3d.demo", "Run the main job end to end on generated data with the packaged defaults."),
    "models": Command("find3d.encoders.list_models", "List the frozen vision / language encoders that can be loaded."),
    "make-data": Command("find3d.data.make_data", "Render a 2D dataset: COCO panoptic, refs, captions, FIND-Bench."),
    "make-scene": Command("find3d.data.make_scene", "Render a posed multi-view nerfstudio scene with 3D ground truth."),
    "ingest-bag": Command("find3d.ingest.ingest_bag", "Turn a rosbag2 (sqlite3 / MCAP) into a posed nerfstudio scene."),
    "check-data": Command("find3d.data.check", "Validate a dataset and list every problem with file and entry."),
    "eval": Command("find3d.evaluation.run_eval", "Evaluate a checkpoint on all 2D tasks, with figures."),
    "train-interface": Command("find3d.train.train_interface", "Train the FIND interface on frozen encoders."),
    "embed-frames": Command("find3d.field.embed_frames", "Embed every frame of a scene with FIND (per-pixel + image)."),
    "export-field": Command("find3d.field.export", "Export a trained find-field as points carrying FIND embeddings."),
    "eval-3d": Command("find3d.query.eval_3d", "3D IoU, localisation and frame accuracy of a field vs 2D fusion."),
    "query": Command("find3d.query.run_query", "Query a field by text, image crop or interleaved: 3D mask + frames."),
}


def _parser() -> tuple[argparse.ArgumentParser, argparse._SubParsersAction]:
    parser = argparse.ArgumentParser(
        prog="find3d",
        description="FIND: one embedding space for images, text and interleaved references, "
        "from 2D segmentation to 3D queries and ROS 2.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=_version())
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", title="commands")
    return parser, sub


def _version() -> str:
    from find3d import __version__

    return f"find3d {__version__}"


def build_parser(argv: list[str]) -> argparse.ArgumentParser:
    """Top-level parser; only the subcommand named in ``argv`` is configured (imported)."""
    parser, sub = _parser()
    chosen = next((a for a in argv if not a.startswith("-")), None)
    for name, command in COMMANDS.items():
        child = sub.add_parser(name, help=command.summary, description=command.summary)
        if name == chosen:
            module = importlib.import_module(command.module)
            module.configure(child)
            child.set_defaults(_run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(argv)
    args = parser.parse_args(argv)
    if not getattr(args, "_run", None):
        parser.print_help()
        return 0 if not argv else 2
    _one_line_warnings(args.command)
    try:
        return int(args._run(args) or 0)
    except Find3dError as err:
        print(f"find3d {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"find3d {args.command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # output piped into e.g. `head`, which closed early: not an error
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


def _one_line_warnings(command: str) -> None:
    """Print find3d's own warnings about the user's input as ``find3d CMD: warning: ...`` (no source line)."""
    import warnings

    from find3d.errors import Find3dWarning

    default = warnings.showwarning

    def show(message: Warning | str, category: type[Warning], filename: str, lineno: int, file: Any = None,
             line: str | None = None) -> None:
        if issubclass(category, Find3dWarning):
            print(f"find3d {command}: warning: {message}", file=sys.stderr)
        else:
            default(message, category, filename, lineno, file, line)

    warnings.showwarning = show


if __name__ == "__main__":
    sys.exit(main())
