"""Files read and written safely: a write that a reader, or a run resumed after a kill, finds
whole or not at all; and model folders read only when they hold no pickled weights."""

from __future__ import annotations

import os
from pathlib import Path

from emu_cli.errors import EmuError

PICKLE_SUFFIXES = (".bin", ".ckpt", ".pt", ".pth", ".pkl")


def write_atomic(path: Path, data: str | bytes) -> None:
    """Write ``data`` to a file beside ``path``, then rename it over ``path``. The file beside
    is named by the process, so that processes writing the same path never share one."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}.partial")
    if isinstance(data, str):
        temporary.write_text(data, encoding="utf-8")
    else:
        temporary.write_bytes(data)
    os.replace(temporary, path)


def refuse_pickles(path: Path) -> None:
    """Refuse a model folder holding pickled weights, which can run code when loaded: emu
    loads safetensors only. Linked folders and files are followed to what they point at."""
    root = Path(path)
    if root.is_file():  # one weights file
        if root.suffix in PICKLE_SUFFIXES or Path(os.path.realpath(root)).suffix in PICKLE_SUFFIXES:
            raise EmuError(
                f"'{path}' holds pickled weights; emu loads safetensors only, since pickle "
                "files can run code when loaded"
            )
        return
    seen: set[str] = set()
    for folder, folders, files in os.walk(root, followlinks=True):
        real = os.path.realpath(folder)
        if real in seen:  # a link back up the tree
            folders[:] = []
            continue
        seen.add(real)
        for name in files:
            target = Path(os.path.realpath(Path(folder) / name))
            if Path(name).suffix in PICKLE_SUFFIXES or target.suffix in PICKLE_SUFFIXES:
                shown = (Path(folder) / name).relative_to(root)
                raise EmuError(
                    f"'{path}' holds pickled weights ({shown}); emu loads safetensors only, "
                    "since pickle files can run code when loaded"
                )
