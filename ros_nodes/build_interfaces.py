"""Build the ``find3d_interfaces`` ROS package (msg / srv) against the ``ros-jazzy-*`` wheels.

    python -m ros_nodes.build_interfaces [--prefix PREFIX] [--force]

A standard ament_cmake configure / build / install with Debian's cmake and gcc, the generators and
message packages coming from the wheels in this interpreter's environment. Installed into the
virtualenv itself (the default prefix), nothing needs setting at run time; into another prefix,
processes need ``LD_LIBRARY_PATH=PREFIX/lib`` and ``PYTHONPATH=PREFIX/lib/python3.X/site-packages``.

Idempotent: a stamp in the prefix records a digest of the package's sources and the interpreter,
and an unchanged build is skipped.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from pathlib import Path

PACKAGE = "find3d_interfaces"
SOURCE = Path(__file__).resolve().parent / PACKAGE
STAMP = f"share/{PACKAGE}/.find3d-build-stamp"
#: what the wheels' builder baked into their CMake exports, and what it must become here
BUILDER_PYTHON_INCLUDE = "/opt/python/cp311-cp311/include/python3.11"
BUILDER_NUMPY_INCLUDE = r"/opt/python/[^;\"]*/site-packages/numpy/(?:_core|core)/include"


class BuildError(RuntimeError):
    """A tool is missing or a build step failed; the message names the fix."""


def digest(source: Path = SOURCE) -> str:
    """Digest of every file of the package and of the interpreter it is built for."""
    sha = hashlib.sha256(sys.executable.encode())
    for path in sorted(p for p in source.rglob("*") if p.is_file()):
        sha.update(str(path.relative_to(source)).encode())
        sha.update(path.read_bytes())
    return sha.hexdigest()


def fix_wheel_cmake_exports(env_prefix: Path) -> int:
    """Point the wheels' generated-Python CMake exports at this interpreter's headers; returns files changed.

    The ``ros-jazzy-*`` wheels were built in a manylinux image, and ~20 of their
    ``export_*__rosidl_generator_pyExport.cmake`` files name that image's Python and numpy include
    folders; CMake refuses a target whose include folder does not exist, so configure fails until
    they name ours. Rewriting is idempotent: a fixed file no longer contains the builder's paths.
    """
    import numpy

    replacements = [(re.escape(BUILDER_PYTHON_INCLUDE), sysconfig.get_paths()["include"]),
                    (BUILDER_NUMPY_INCLUDE, numpy.get_include())]
    changed = 0
    for path in (env_prefix / "share").glob("*/cmake/export_*__rosidl_generator_pyExport.cmake"):
        text = original = path.read_text()
        for pattern, ours in replacements:
            text = re.sub(pattern, ours, text)
        if text != original:
            path.write_text(text)
            changed += 1
    return changed


def _run(command: list[str], env: dict[str, str], what: str) -> None:
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        tail = "\n".join((done.stdout + done.stderr).splitlines()[-30:])
        raise BuildError(f"{what} failed ({' '.join(command[:3])} ...):\n{tail}")


def build(prefix: Path, force: bool = False, jobs: int | None = None) -> bool:
    """Configure, build and install the package into ``prefix``; False when it was up to date."""
    env_prefix = Path(sys.prefix)
    stamp = prefix / STAMP
    wanted = digest()
    if not force and stamp.is_file() and stamp.read_text() == wanted:
        return False
    for tool in ("cmake", "c++", "make"):
        if shutil.which(tool) is None:
            raise BuildError(f"`{tool}` not found: install Debian's cmake, g++ and make (./bootstrap.sh does).")
    fix_wheel_cmake_exports(env_prefix)
    env = {**os.environ, "CMAKE_PREFIX_PATH": str(env_prefix), "AMENT_PREFIX_PATH": str(env_prefix),
           "PATH": f"{env_prefix / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}"}
    with tempfile.TemporaryDirectory(prefix="find3d-interfaces-build-") as work:
        _run(["cmake", "-S", str(SOURCE), "-B", work, f"-DCMAKE_INSTALL_PREFIX={prefix}",
              f"-DPython3_EXECUTABLE={sys.executable}", "-DBUILD_TESTING=OFF", "-DCMAKE_BUILD_TYPE=Release"],
             env, "cmake configure")
        _run(["cmake", "--build", work, "--parallel", str(jobs or os.cpu_count() or 1)], env, "cmake build")
        _run(["cmake", "--install", work], env, "cmake install")
    stamp.parent.mkdir(parents=True, exist_ok=True)
    stamp.write_text(wanted)
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ros_nodes.build_interfaces", description=__doc__.split("\n")[0])
    parser.add_argument("--prefix", type=Path, default=Path(sys.prefix),
                        help="install prefix (default: this interpreter's environment)")
    parser.add_argument("--force", action="store_true", help="rebuild even when the sources are unchanged")
    args = parser.parse_args(argv)
    try:
        built = build(args.prefix.resolve(), force=args.force)
    except BuildError as err:
        print(f"build_interfaces: error: {err}", file=sys.stderr)
        return 1
    print(f"{PACKAGE}: {'built and installed' if built else 'up to date'} in {args.prefix}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
