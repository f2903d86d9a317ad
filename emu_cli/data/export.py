"""Writing an image folder (files + metadata.jsonl, the layout ``datasets`` reads as
"imagefolder"): what every curation stage hands to the next."""

from __future__ import annotations

import io
import json
import os
import shutil
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from emu_cli.data.dataset import read_bytes
from emu_cli.data.sources import Sample


def image_suffix(data: bytes) -> str:
    """The file extension of encoded image bytes, from their header (tar members and renamed
    files do not say)."""
    from PIL import Image

    with Image.open(io.BytesIO(data)) as image:
        kind = (image.format or "png").lower()
    return "." + {"jpeg": "jpg", "mpo": "jpg"}.get(kind, kind)


def write_image_folder(target: Path, entries: Iterable[tuple[Sample, str, dict[str, Any]]]) -> int:
    """Write ``(sample, file stem in the folder, metadata record)`` entries to ``target``,
    replacing it as a whole: a crash leaves the previous folder or the new one, never a mix.
    Returns how many were written."""
    target = Path(target)
    partial = target.with_name(target.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    lines = []
    for sample, stem, record in entries:
        data = read_bytes(sample)
        name = stem + image_suffix(data)
        (partial / name).parent.mkdir(parents=True, exist_ok=True)
        (partial / name).write_bytes(data)
        lines.append(json.dumps({"file_name": name, **record}))
    (partial / "metadata.jsonl").write_text("".join(line + "\n" for line in lines))
    shutil.rmtree(target, ignore_errors=True)
    os.replace(partial, target)
    return len(lines)
