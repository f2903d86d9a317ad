"""Index a dataset without decoding it: which samples exist, where their bytes are, their caption.

Two layouts are read, the ones people already have:
- an image folder with ``metadata.jsonl`` lines ``{"file_name": ..., "text": ...}``, as
  ``datasets.load_dataset("imagefolder")`` reads it (any number of such files in subfolders);
- WebDataset tar shards as img2dataset writes them: ``KEY.jpg`` + ``KEY.txt`` [+ ``KEY.json``].

Indexing reads only metadata and tar headers, so the trainer gets random access (exact resume,
per-epoch shuffling, sharding across processes) without holding images in memory. Samples that
are unusable before decoding (missing file, zero bytes, missing or empty caption) are recorded
with the reason instead of being indexed.
"""

from __future__ import annotations

import hashlib
import json
import tarfile
from dataclasses import dataclass, field
from pathlib import Path

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff")
CAPTION_KEYS = ("text", "caption", "prompt")


class DatasetError(ValueError):
    """The dataset as a whole cannot be used (missing, empty, unreadable)."""


@dataclass(frozen=True)
class Sample:
    key: str
    caption: str
    path: str  # the image file, or the tar shard holding it
    offset: int = -1  # byte offset of the image inside the shard; -1 for a plain file
    size: int = -1


@dataclass
class SampleIndex:
    source: str
    samples: list[Sample]
    rejected: list[tuple[str, str]] = field(default_factory=list)  # (key, reason)

    def fingerprint(self) -> str:
        """A short hash of what the dataset holds: keys, sizes and captions, in order."""
        digest = hashlib.sha256()
        for sample in self.samples:
            digest.update(f"{sample.key}\0{sample.size}\0{sample.caption}\n".encode())
        return digest.hexdigest()[:16]

    def __len__(self) -> int:
        return len(self.samples)


def _caption_from(record: dict) -> str | None:
    for key in CAPTION_KEYS:
        value = record.get(key)
        if isinstance(value, str):
            return value
    return None


def _index_imagefolder(root: Path, metadata_files: list[Path]) -> SampleIndex:
    index = SampleIndex(str(root), [])
    for metadata in metadata_files:
        folder = metadata.parent
        for line_number, line in enumerate(metadata.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            where = f"{metadata.relative_to(root)}:{line_number}"
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                index.rejected.append((where, f"metadata line is not JSON ({error.msg})"))
                continue
            name = record.get("file_name") if isinstance(record, dict) else None
            if not isinstance(name, str):
                index.rejected.append((where, "metadata line has no file_name"))
                continue
            image = (folder / name).resolve()
            key = (
                str(image.relative_to(root.resolve()))
                if image.is_relative_to(root.resolve())
                else None
            )
            if key is None:
                index.rejected.append((where, f"file_name '{name}' points outside the dataset"))
                continue
            caption = _caption_from(record)
            if not caption or not caption.strip():
                index.rejected.append((key, "missing or empty caption"))
            elif not image.is_file():
                index.rejected.append((key, "image file is missing"))
            elif (size := image.stat().st_size) == 0:
                index.rejected.append((key, "image file is empty (0 bytes)"))
            else:
                index.samples.append(Sample(key, caption.strip(), str(image), -1, size))
    return index


def _index_shard(shard: Path, index: SampleIndex) -> None:
    groups: dict[str, dict[str, tarfile.TarInfo]] = {}
    try:
        with tarfile.open(shard, "r") as tar:
            for member in tar:
                if not member.isfile():
                    continue
                name = member.name
                base = name.rsplit("/", 1)[-1]
                if "." not in base:
                    continue
                stem, extension = base.split(".", 1)
                key = f"{name[: len(name) - len(base)]}{stem}"
                groups.setdefault(key, {})[extension.lower()] = member
    except (tarfile.TarError, OSError, EOFError) as error:
        index.rejected.append((shard.name, f"unreadable tar shard ({error})"))
        if not groups:
            return
    with open(shard, "rb") as handle:
        for key, members in groups.items():
            where = f"{shard.name}:{key}"
            image = next((members[e] for e in members if f".{e}" in IMAGE_EXTENSIONS), None)
            caption = None
            if "txt" in members:
                handle.seek(members["txt"].offset_data)
                caption = handle.read(members["txt"].size).decode("utf-8", errors="replace")
            elif "json" in members:
                handle.seek(members["json"].offset_data)
                try:
                    record = json.loads(handle.read(members["json"].size))
                    caption = _caption_from(record) if isinstance(record, dict) else None
                except (json.JSONDecodeError, UnicodeDecodeError):
                    caption = None
            if image is None:
                index.rejected.append((where, "no image member"))
            elif not caption or not caption.strip():
                index.rejected.append((where, "missing or empty caption"))
            elif image.size == 0:
                index.rejected.append((where, "image member is empty (0 bytes)"))
            else:
                index.samples.append(
                    Sample(where, caption.strip(), str(shard), image.offset_data, image.size)
                )


def index_dataset(source: str | Path) -> SampleIndex:
    """Index an image folder or WebDataset shards (a .tar file or a folder of them)."""
    root = Path(source)
    if not root.exists():
        raise DatasetError(f"dataset '{source}' does not exist")
    if root.is_file():
        if root.suffix != ".tar":
            raise DatasetError(f"dataset '{source}' is a file but not a .tar shard")
        shards = [root]
        metadata_files: list[Path] = []
    else:
        metadata_files = sorted(root.rglob("metadata.jsonl"))
        shards = sorted(root.rglob("*.tar"))
    if metadata_files:
        index = _index_imagefolder(root, metadata_files)
    elif shards:
        index = SampleIndex(str(root), [])
        for shard in shards:
            _index_shard(shard, index)
    else:
        raise DatasetError(
            f"dataset '{source}' has neither metadata.jsonl (image folder) nor .tar shards "
            "(WebDataset)"
        )
    if not index.samples:
        reasons = "; ".join(f"{k}: {r}" for k, r in index.rejected[:3])
        detail = f" ({len(index.rejected)} rejected, e.g. {reasons})" if index.rejected else ""
        raise DatasetError(f"dataset '{source}' has no usable sample{detail}")
    return index
