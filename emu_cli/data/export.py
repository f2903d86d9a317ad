"""Writing an image folder (files + metadata.jsonl, the layout ``datasets`` reads as
"imagefolder"): what every curation stage hands to the next."""

from __future__ import annotations

import io
import json
import os
import shutil
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from emu_cli.data.sources import Sample
from emu_cli.lock import FolderLock


def image_suffix(data: bytes) -> str:
    """The file extension of encoded image bytes, from their header (tar members and renamed
    files do not say)."""
    from PIL import Image

    with Image.open(io.BytesIO(data)) as image:
        kind = (image.format or "png").lower()
    return "." + {"jpeg": "jpg", "mpo": "jpg"}.get(kind, kind)


# Written into every folder these functions make (hidden, so `datasets` does not read it): only
# a folder holding it is replaced, so a mistyped output path never wipes other files.
MARKER = ".emu-image-folder"


@contextmanager
def replacing(target: Path, source: str | Path | None = None) -> Iterator[Path]:
    """A fresh folder to write in that replaces ``target`` as a whole when the block ends without
    an error: a crash leaves the previous folder or the new one, never a mix. ``target`` is
    checked first (:func:`refuse_to_replace`) against the dataset it is made from, if any."""
    target = Path(target)
    refuse_to_replace(target, None if source is None else Path(source))
    with FolderLock(target.parent, name=f".{target.name}.emu.lock"):
        # named by the process, and removed if the block fails: nothing is left half-written
        partial = target.with_name(f"{target.name}.{os.getpid()}.partial")
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir(parents=True)
        try:
            yield partial
        except BaseException:
            shutil.rmtree(partial, ignore_errors=True)
            raise
        (partial / MARKER).write_text("written by emu; replaced as a whole when written again\n")
        shutil.rmtree(target, ignore_errors=True)
        os.replace(partial, target)


def write_image_folder(
    target: Path, entries: Iterable[tuple[Sample, str, dict[str, Any]]], source: str | Path
) -> int:
    """Write ``(sample, file stem in the folder, metadata record)`` entries, read from the
    dataset at ``source``, to ``target``, replacing it as a whole (:func:`replacing`). Returns
    how many were written."""
    from emu_cli.data.dataset import read_bytes  # imports torch; checking a target need not

    lines = []
    with replacing(target, source) as folder:
        for sample, stem, record in entries:
            data = read_bytes(sample)
            name = stem + image_suffix(data)
            (folder / name).parent.mkdir(parents=True, exist_ok=True)
            (folder / name).write_bytes(data)
            lines.append(json.dumps({"file_name": name, **record}))
        (folder / "metadata.jsonl").write_text("".join(line + "\n" for line in lines))
    return len(lines)


def refuse_to_replace(target: Path, source: Path | None = None) -> None:
    """Raise ``ValueError`` naming ``target`` unless replacing it loses nothing: it must not be
    or hold the dataset it is written from, nor sit inside it (its metadata.jsonl would join
    that dataset the next time it is read), and if it exists and is not empty it must be a
    folder emu wrote."""
    if source is not None:
        resolved, origin = target.resolve(), source.resolve()
        if resolved == origin or resolved in origin.parents:
            raise ValueError(
                f"'{target}' holds the dataset it would be written from ('{source}'), and it "
                "is replaced as a whole: choose another output folder"
            )
        if origin in resolved.parents:
            raise ValueError(
                f"'{target}' is inside the dataset it is written from ('{source}'): the "
                "dataset would take it in the next time it is read; choose a folder outside"
            )
    if target.is_file() or (
        target.is_dir() and any(target.iterdir()) and not (target / MARKER).is_file()
    ):
        raise ValueError(
            f"'{target}' exists and is not a folder emu wrote; it would be replaced as a "
            "whole: choose a new output folder, or remove it first"
        )
