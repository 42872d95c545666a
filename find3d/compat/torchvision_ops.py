"""Make PyPI's CUDA torchvision importable on a CPU-only torch.

PyPI's torchvision 0.28 wheel is a CUDA build. On a CPU torch its compiled ``_C`` extension fails
to load, and ``import torchvision`` then dies in ``_meta_registrations`` with
``RuntimeError: operator torchvision::nms does not exist``, because it registers fake kernels for
``torchvision::nms`` / ``torchvision::qnms`` unconditionally. Every ``ns-*`` command imports
torchvision before nerfstudio loads any plugin, so the fix must run at interpreter start:

* ``install()`` writes ``find3d-torchvision-ops.pth`` into site-packages; at start-up it only adds
  a meta-path hook (no torch import, so start-up stays fast);
* on the first ``import torchvision`` the hook probes whether the compiled extension loads. Only if
  it does not, it defines the two operator schemas (no kernels: torchvision's own ``_assert_has_ops``
  still reports compiled ops as unavailable, which is the truth on this build).

Where torchvision's extension loads (a matching CPU or CUDA torch), nothing is changed.
Compiled-only features (``torchvision.io`` codecs, ``roi_align`` kernels) stay unavailable on CPU.
"""

from __future__ import annotations

import importlib.abc
import importlib.util
import sys
import sysconfig
from pathlib import Path

PTH_NAME = "find3d-torchvision-ops.pth"
_PTH_LINE = "import find3d.compat.torchvision_ops as _f3d_tv; _f3d_tv.install_import_hook()\n"
_SCHEMAS = {
    "nms": "nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
    "qnms": "qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
}
_LIBRARY = None  # keeps the torch.library.Library alive (its registrations die with it)


def _extension_loads() -> bool:
    """True if torchvision's compiled extension loads against the installed torch."""
    import torch

    spec = importlib.util.find_spec("torchvision")
    if spec is None or spec.origin is None:
        return True  # no torchvision: nothing to fix
    libs = sorted(Path(spec.origin).parent.glob("_C*.so"))
    if not libs:
        return False
    try:
        torch.ops.load_library(str(libs[0]))
    except (OSError, RuntimeError):
        return False
    return True


def ensure_ops() -> bool:
    """Register the missing ``torchvision::`` schemas if needed; returns True if it did."""
    global _LIBRARY
    if _LIBRARY is not None or _extension_loads():
        return False
    import torch

    _LIBRARY = torch.library.Library("torchvision", "DEF")
    for schema in _SCHEMAS.values():
        _LIBRARY.define(schema)
    return True


class _TorchvisionHook(importlib.abc.MetaPathFinder):
    """Runs ``ensure_ops`` once, just before torchvision is first imported."""

    def find_spec(self, fullname, path=None, target=None):  # noqa: ARG002 - finder protocol
        if fullname == "torchvision":
            sys.meta_path.remove(self)
            ensure_ops()
        return None  # let the regular finders import it


def install_import_hook() -> None:
    # The start-up hook is also the one place find3d runs in an ``ns-*`` command before nerfstudio's
    # import-time deprecation warnings (see find3d.compat.quiet).
    from find3d.compat.quiet import filter_library_warnings

    filter_library_warnings()
    if "torchvision" not in sys.modules and not any(isinstance(f, _TorchvisionHook) for f in sys.meta_path):
        sys.meta_path.insert(0, _TorchvisionHook())


def install(site_packages: str | None = None) -> Path:
    """Write the start-up ``.pth`` file into ``site_packages`` (default: this interpreter's purelib)."""
    target = Path(site_packages or sysconfig.get_paths()["purelib"]) / PTH_NAME
    target.write_text(_PTH_LINE, encoding="utf-8")
    return target
