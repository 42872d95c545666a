"""The find3d_interfaces ROS package: a clean configure / build / install against the ros-jazzy wheels,
and its types importing and round-tripping through rclpy's serialisation from the new prefix."""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from ros_nodes.build_interfaces import STAMP, build, digest


@pytest.mark.slow
def test_builds_into_a_clean_prefix_and_its_types_import(tmp_path: Path) -> None:
    prefix = tmp_path / "prefix"
    assert build(prefix, jobs=2) is True
    assert (prefix / STAMP).read_text() == digest()
    assert build(prefix) is False  # unchanged sources: skipped
    site = Path(sysconfig.get_paths(vars={"base": str(prefix), "platbase": str(prefix)})["purelib"])
    assert (site / "find3d_interfaces" / "srv" / "_query.py").is_file()
    script = (
        "from rclpy.serialization import deserialize_message, serialize_message\n"
        "import find3d_interfaces.srv as srv, find3d_interfaces.msg as msg\n"
        "assert srv.Query.__module__.startswith('find3d_interfaces'), srv.Query.__module__\n"
        "import find3d_interfaces, sys; assert find3d_interfaces.__file__.startswith(sys.argv[1])\n"
        "request = srv.Query.Request(query='the mug next to <image:0>', threshold=0.4, top_k=2)\n"
        "back = deserialize_message(serialize_message(request), srv.Query.Request)\n"
        "assert (back.query, round(back.threshold, 6), back.top_k) == (request.query, 0.4, 2)\n"
        "frame = msg.Frame(index=3, file_path='images/a.png', score=0.5)\n"
        "assert deserialize_message(serialize_message(frame), msg.Frame).file_path == 'images/a.png'\n"
        "print('ok', [m for m in ('Frame', 'Object', 'EntityMask') if hasattr(msg, m)])\n"
    )
    libraries = f"{prefix / 'lib'}:{os.environ.get('LD_LIBRARY_PATH', '')}"
    env = {**os.environ, "PYTHONPATH": str(site), "LD_LIBRARY_PATH": libraries}
    env.pop("_ROS_WHEELS_BOOTSTRAP_COMPLETE", None)  # let the child set up the wheels' library path itself
    done = subprocess.run([sys.executable, "-c", script, str(prefix)], env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "ok ['Frame', 'Object', 'EntityMask']" in done.stdout
