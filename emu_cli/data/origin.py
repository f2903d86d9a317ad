"""Where a dataset came from, as far as emu must know: whether it is the built-in world's pool
(``emu data synth``), whose models the world's judge and prompts may judge by default."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

WORLD_MARKER = "world.json"


def mark_world_pool(folder: Path, record: dict[str, Any]) -> None:
    (Path(folder) / WORLD_MARKER).write_text(json.dumps(record, indent=2))


def is_world_pool(data: str | Path) -> bool:
    """Whether ``data`` (a folder, or a shard in one) is the world's pool."""
    path = Path(data)
    return (path / WORLD_MARKER).is_file() or (path.parent / WORLD_MARKER).is_file()
