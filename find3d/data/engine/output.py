"""The output folder rules shared by make-data and make-scene."""

from __future__ import annotations

import shutil
from collections.abc import Iterable
from pathlib import Path

from find3d.errors import InputError


def prepare_folder(out: Path, overwrite: bool, outputs: Iterable[str], folders: Iterable[str]) -> None:
    """Refuse a non-empty ``out`` unless ``overwrite``; then remove only our ``outputs`` and create ``folders``.

    Removing just the generator's own names keeps unrelated user files safe while guaranteeing that no
    stale image or annotation from an earlier, larger run survives next to the new files.
    """
    if out.exists() and not out.is_dir():
        raise InputError(f"--out {out}: is a file; pass a folder path.")
    if out.is_dir() and any(out.iterdir()):
        if not overwrite:
            raise InputError(f"--out {out}: folder is not empty; pass --overwrite or choose a new folder.")
        for name in outputs:
            target = out / name
            if target.is_dir():
                shutil.rmtree(target)
            elif target.exists():
                target.unlink()
    try:
        for folder in folders:
            (out / folder).mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise InputError(f"--out {out}: cannot create folders ({err.strerror}); choose a writable location.") from err
