"""Writing a file so that a reader, or a run resumed after a kill, finds the old content or the
new, never half of it."""

from __future__ import annotations

import os
from pathlib import Path


def write_atomic(path: Path, data: str | bytes) -> None:
    """Write ``data`` to a file beside ``path``, then rename it over ``path``. The file beside
    is named by the process, so that processes writing the same path never share one."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}.partial")
    if isinstance(data, str):
        temporary.write_text(data, encoding="utf-8")
    else:
        temporary.write_bytes(data)
    os.replace(temporary, path)
