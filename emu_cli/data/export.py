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

from emu_cli.data.sources import Sample


def image_suffix(data: bytes) -> str:
    """The file extension of encoded image bytes, from their header (tar members and renamed
    files do not say)."""
    from PIL import Image

    with Image.open(io.BytesIO(data)) as image:
        kind = (image.format or "png").lower()
    return "." + {"jpeg": "jpg", "mpo": "jpg"}.get(kind, kind)


# Written into every folder write_image_folder makes (hidden, so `datasets` does not read it):
# only a folder holding it is replaced, so a mistyped output path never wipes other files.
MARKER = ".emu-image-folder"


def write_image_folder(
    target: Path, entries: Iterable[tuple[Sample, str, dict[str, Any]]], source: str | Path
) -> int:
    """Write ``(sample, file stem in the folder, metadata record)`` entries, read from the
    dataset at ``source``, to ``target``, replacing it as a whole: a crash leaves the previous
    folder or the new one, never a mix. Returns how many were written."""
    from emu_cli.data.dataset import read_bytes  # imports torch; checking a target need not

    target = Path(target)
    refuse_to_replace(target, Path(source))
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
    (partial / MARKER).write_text("an image folder written by emu; replaced as a whole\n")
    shutil.rmtree(target, ignore_errors=True)
    os.replace(partial, target)
    return len(lines)


def refuse_to_replace(target: Path, source: Path) -> None:
    """Raise ``ValueError`` naming ``target`` unless replacing it loses nothing: it must not be
    or hold the dataset it is written from, and if it exists and is not empty it must be a
    folder this module wrote."""
    resolved, origin = target.resolve(), source.resolve()
    if resolved == origin or resolved in origin.parents:
        raise ValueError(
            f"'{target}' holds the dataset it would be written from ('{source}'), and it is "
            "replaced as a whole: choose another output folder"
        )
    if target.is_file() or (
        target.is_dir() and any(target.iterdir()) and not (target / MARKER).is_file()
    ):
        raise ValueError(
            f"'{target}' exists and is not an image folder written by emu; it would be "
            "replaced as a whole: choose a new output folder, or remove it first"
        )
