"""The torchvision shim: CUDA torchvision imports on CPU torch, and plain ns-train works."""

from __future__ import annotations

import subprocess
import sys
import sysconfig
from pathlib import Path

from find3d.compat import torchvision_ops

BIN = Path(sys.executable).parent


def run(*cmd: str) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=180)


def test_pth_file_is_installed_in_site_packages():
    pth = Path(sysconfig.get_paths()["purelib"]) / torchvision_ops.PTH_NAME
    assert pth.is_file(), "bootstrap.sh must install the start-up hook"
    assert pth.read_text().startswith("import find3d.compat.torchvision_ops")


def test_shim_is_needed_here_and_only_registers_when_extension_fails():
    # On this machine PyPI's CUDA torchvision extension cannot load against CPU torch.
    code = "from find3d.compat import torchvision_ops as t; print(t._extension_loads())"
    probe = run(str(BIN / "python"), "-c", code)
    assert probe.stdout.strip() == "False", probe.stderr


def test_import_torchvision_succeeds_and_transforms_work():
    code = (
        "import torch, torchvision, torchvision.transforms.functional as F\n"
        "print(F.resize(torch.rand(3, 8, 8), [4, 4]).shape)\n"
        "print(torch.ops.torchvision.nms)\n"
    )
    result = run(str(BIN / "python"), "-c", code)
    assert result.returncode == 0, result.stderr
    assert "torch.Size([3, 4, 4])" in result.stdout


def test_without_the_hook_torchvision_import_fails():
    # -S skips site-packages .pth processing; add the venv path by hand to prove the shim is what helps.
    purelib = sysconfig.get_paths()["purelib"]
    code = f"import sys; sys.path.append({purelib!r}); import torchvision"
    result = run(str(BIN / "python"), "-S", "-c", code)
    assert result.returncode != 0
    assert "torchvision::nms does not exist" in result.stderr


def test_ns_train_help_runs_and_lists_find_field():
    result = run(str(BIN / "ns-train"), "--help")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "find-field" in result.stdout
