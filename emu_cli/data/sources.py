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
import os
import tarfile
from dataclasses import dataclass, field
from pathlib import Path

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff")
CAPTION_KEYS = ("text", "caption", "prompt")
# Longer captions are spam or scraped page text, and no text encoder reads that far.
MAX_CAPTION_CHARS = 2000


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


def caption_problem(caption: str | None) -> str | None:
    """Why a caption cannot be used, or None."""
    if caption is None or not caption.strip():
        return "missing or empty caption"
    if len(caption) > MAX_CAPTION_CHARS:
        return f"caption is {len(caption)} characters, over {MAX_CAPTION_CHARS}"
    return None


def _index_imagefolder(root: Path, metadata_files: list[Path]) -> SampleIndex:
    index = SampleIndex(str(root), [])
    seen: set[str] = set()
    for metadata in metadata_files:
        folder = metadata.parent
        # Lines are decoded one by one: one bad byte must cost one sample, not the file.
        for line_number, raw in enumerate(metadata.read_bytes().splitlines(), 1):
            if not raw.strip():
                continue
            where = f"{metadata.relative_to(root)}:{line_number}"
            try:
                record = json.loads(raw.decode("utf-8"))
            except UnicodeDecodeError:
                index.rejected.append((where, "metadata line is not valid UTF-8"))
                continue
            except json.JSONDecodeError as error:
                index.rejected.append((where, f"metadata line is not JSON ({error.msg})"))
                continue
            name = record.get("file_name") if isinstance(record, dict) else None
            if not isinstance(name, str):
                index.rejected.append((where, "metadata line has no file_name"))
                continue
            # Where the name points, by the names alone: "../" must not leave the dataset, but
            # its files may be links (the Hub's download cache links every file to a blob).
            image, base = (Path(os.path.abspath(p)) for p in (folder / name, root))
            key = str(image.relative_to(base)) if image.is_relative_to(base) else None
            if key is None:
                index.rejected.append((where, f"file_name '{name}' points outside the dataset"))
                continue
            if key in seen:
                index.rejected.append((where, f"file_name '{name}' is listed again"))
                continue
            seen.add(key)
            caption = _caption_from(record)
            if problem := caption_problem(caption):
                index.rejected.append((key, problem))
            elif not image.is_file():
                index.rejected.append((key, "image file is missing"))
            elif (size := image.stat().st_size) == 0:
                index.rejected.append((key, "image file is empty (0 bytes)"))
            else:
                index.samples.append(Sample(key, caption.strip(), str(image), -1, size))
    return index


def _unsafe_member_name(name: str) -> bool:
    """A tar member name that would land outside a folder it is extracted to."""
    parts = name.replace("\\", "/").split("/")
    return name.startswith(("/", "\\")) or ".." in parts or (len(name) > 1 and name[1] == ":")


def _index_shard(shard: Path, index: SampleIndex) -> None:
    groups: dict[str, dict[str, tarfile.TarInfo]] = {}
    try:
        with tarfile.open(shard, "r") as tar:
            for member in tar:
                if not member.isfile():
                    continue
                name = member.name
                if _unsafe_member_name(name):
                    index.rejected.append(
                        (f"{shard.name}:{name}", "tar member name escapes the dataset folder")
                    )
                    continue
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
                try:
                    caption = handle.read(members["txt"].size).decode("utf-8")
                except UnicodeDecodeError:
                    index.rejected.append((where, "caption is not valid UTF-8"))
                    continue
            elif "json" in members:
                handle.seek(members["json"].offset_data)
                try:
                    record = json.loads(handle.read(members["json"].size))
                    caption = _caption_from(record) if isinstance(record, dict) else None
                except (json.JSONDecodeError, UnicodeDecodeError):
                    caption = None
            if image is None:
                index.rejected.append((where, "no image member"))
            elif problem := caption_problem(caption):
                index.rejected.append((where, problem))
            elif image.size == 0:
                index.rejected.append((where, "image member is empty (0 bytes)"))
            else:
                index.samples.append(
                    Sample(where, caption.strip(), str(shard), image.offset_data, image.size)
                )


def index_dataset(source: str | Path) -> SampleIndex:
    """Index an image folder or WebDataset shards (a .tar file or a folder of them), here or in
    a Hub dataset repo (``OWNER/NAME[@REVISION]``, as ``emu push --dataset`` makes them)."""
    from emu_cli.hub import folder_or_repo

    root, _ = folder_or_repo(str(source), "dataset", f"dataset '{source}' is not a folder here")
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
