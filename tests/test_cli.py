"""The find3d command line: help lists every registered subcommand; user errors print no traceback."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from find3d.cli import COMMANDS

FIND3D = str(Path(sys.executable).parent / "find3d")


def test_help_lists_every_subcommand_with_a_summary():
    result = subprocess.run([FIND3D, "--help"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0
    for name, command in COMMANDS.items():
        assert name in result.stdout
        assert command.summary.split()[0] in result.stdout


def test_every_registered_command_has_configure_and_run():
    import importlib

    for name, command in COMMANDS.items():
        module = importlib.import_module(command.module)
        assert callable(module.configure), name
        assert callable(module.run), name


def test_every_subcommand_help_works():
    for name in COMMANDS:
        result = subprocess.run([FIND3D, name, "--help"], capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, f"{name}: {result.stderr[-1000:]}"
        assert "usage: find3d " + name in result.stdout


def test_unknown_subcommand_is_an_argparse_error():
    result = subprocess.run([FIND3D, "no-such-command"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "invalid choice" in result.stderr
