"""Index a dataset without decoding it: which samples exist, where their bytes are, their caption.

The layouts people already have are read, each the same way afterwards:
- an image folder with ``metadata.jsonl`` lines ``{"file_name": ..., "text": ...}``, or a
  ``metadata.csv`` / ``metadata.parquet`` with those columns, as
  ``datasets.load_dataset("imagefolder")`` reads them (any number of such files in subfolders);
- WebDataset tar shards as img2dataset writes them: ``KEY.jpg`` + ``KEY.txt`` [+ ``KEY.json``];
- an image folder with a caption file beside each image, ``NAME.jpg`` + ``NAME.txt`` (kohya's
  and SimpleTuner's layout), nested folders too;
- an image folder with no captions at all, where the work reads none (``captions_for=None``: an
  autoencoder or tokenizer stage, a review stage, filters that look at pixels only).

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
from typing import BinaryIO

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff")
CAPTION_KEYS = ("text", "caption", "prompt")
# Longer captions are spam or scraped page text, and no text encoder reads that far.
MAX_CAPTION_CHARS = 2000
MAX_NAME_CHARS = 1024  # longer than any file system's path allows
UTF8_BOM = b"\xef\xbb\xbf"


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
    # False for data with no caption at all, read where the work reads none: every caption ""
    captions_required: bool = True

    def fingerprint(self) -> str:
        """A short hash of what the dataset holds: keys, sizes and captions, in order."""
        digest = hashlib.sha256()
        for sample in self.samples:
            digest.update(f"{sample.key}\0{sample.size}\0{sample.caption}\n".encode())
        return digest.hexdigest()[:16]

    def __len__(self) -> int:
        return len(self.samples)

    def caption_problem(self, caption: str | None) -> str | None:
        """Why ``caption`` makes its sample a reject here, or None."""
        if not self.captions_required and (caption is None or not caption.strip()):
            return None
        return caption_problem(caption)


def _caption_from(record: dict) -> str | None:
    for key in CAPTION_KEYS:
        value = record.get(key)
        if isinstance(value, str):
            return value
    return None


def text_problem(text: str) -> str | None:
    """Why a string from a record cannot be written or hashed as UTF-8 (JSON's ``\\ud800``
    escapes decode to lone surrogates), or None."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return "is not valid Unicode (a lone surrogate)"
    return None


def caption_problem(caption: str | None) -> str | None:
    """Why a caption cannot be used, or None."""
    if caption is None or not caption.strip():
        return "missing or empty caption"
    if len(caption) > MAX_CAPTION_CHARS:
        return f"caption is {len(caption)} characters, over {MAX_CAPTION_CHARS}"
    if text_problem(caption):
        return "caption is not valid Unicode (a lone surrogate)"
    return None


class _Unusable(str):
    """A metadata record that could not be read, as the reason its sample is a reject."""


def _index_metadata(root: Path, files: list[Path], index: SampleIndex) -> SampleIndex:
    """``metadata.jsonl``, ``metadata.csv`` or ``metadata.parquet`` files: one record a line or
    row (numbered from 1 in JSON lines, from 2 in a CSV, whose header is line 1, and from 0 in
    Parquet). One bad record costs one sample, never the file."""
    seen: set[str] = set()
    for metadata in files:
        name = str(metadata.relative_to(root))
        try:
            records = _records(metadata)
        except Exception as error:  # noqa: BLE001 - an unreadable file is a reject, counted
            index.rejected.append((name, f"unreadable ({_described(error)})"))
            continue
        for number, record in records:
            where = f"{name}:{number}"
            if isinstance(record, _Unusable):
                index.rejected.append((where, str(record)))
                continue
            try:
                _index_record(record, metadata.parent, root, seen, index, where)
            except Exception as error:  # noqa: BLE001 - whatever it holds, it is one reject
                index.rejected.append((where, f"unusable metadata record ({_described(error)})"))
    return index


def _records(metadata: Path) -> list[tuple[int, object]]:
    if metadata.suffix == ".parquet":
        import pyarrow.parquet as pq

        return list(enumerate(pq.read_table(metadata).to_pylist()))
    if metadata.suffix == ".csv":
        import csv

        with open(metadata, encoding="utf-8-sig", newline="") as handle:
            return list(enumerate(csv.DictReader(handle), 2))
    lines = metadata.read_bytes().splitlines()
    if lines and lines[0].startswith(UTF8_BOM):  # written by some editors and exporters
        lines[0] = lines[0][len(UTF8_BOM) :]
    return [(n, _json_record(raw)) for n, raw in enumerate(lines, 1) if raw.strip()]


def _json_record(raw: bytes) -> object:
    try:
        return json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        return _Unusable("metadata line is not valid UTF-8")
    except json.JSONDecodeError as error:
        return _Unusable(f"metadata line is not JSON ({error.msg})")
    except Exception as error:  # noqa: BLE001 - nesting deeper than Python's stack, say
        return _Unusable(f"unusable metadata line ({_described(error)})")


def _index_sidecars(root: Path, images: list[Path], index: SampleIndex) -> SampleIndex:
    """Images with a caption file beside them (``NAME.txt``); an image without one, or with an
    unreadable one, is a reject naming it."""
    for image in images:
        key = str(image.relative_to(root))
        text_file = image.with_suffix(".txt")
        try:
            caption = text_file.read_bytes().decode("utf-8-sig")
        except FileNotFoundError:
            index.rejected.append((key, f"no caption file {text_file.name} beside it"))
            continue
        except (OSError, UnicodeDecodeError) as error:
            index.rejected.append((key, f"caption file {text_file.name}: {_described(error)}"))
            continue
        if problem := index.caption_problem(caption):
            index.rejected.append((key, problem))
        elif (size := image.stat().st_size) == 0:
            index.rejected.append((key, "image file is empty (0 bytes)"))
        else:
            index.samples.append(Sample(key, caption.strip(), str(image), -1, size))
    return index


def _index_uncaptioned(root: Path, images: list[Path], index: SampleIndex) -> SampleIndex:
    """Images alone: every caption empty, for work that reads none."""
    for image in images:
        key = str(image.relative_to(root))
        if (size := image.stat().st_size) == 0:
            index.rejected.append((key, "image file is empty (0 bytes)"))
        else:
            index.samples.append(Sample(key, "", str(image), -1, size))
    return index


JSON_LINES, TABLES, SHARDS = "metadata.jsonl files", "metadata.csv/.parquet files", ".tar shards"


def caption_files(root: Path) -> dict[str, list[Path]]:
    """The files under ``root`` that hold captions for many images, by layout (only the
    layouts found): metadata.jsonl, metadata.csv or .parquet, WebDataset .tar shards."""
    found = {
        JSON_LINES: sorted(root.rglob("metadata.jsonl")),
        TABLES: sorted([*root.rglob("metadata.csv"), *root.rglob("metadata.parquet")]),
        SHARDS: sorted(root.rglob("*.tar")),
    }
    return {layout: files for layout, files in found.items() if files}


def image_files(root: Path) -> list[Path]:
    """Every image file under ``root``, in path order."""
    return sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS)


def _refuse_mixed(source: str | Path, layouts: dict[str, list[Path]]) -> None:
    """Two layouts in one tree would each claim the images; which one is meant is not guessed."""
    if len(layouts) > 1:
        found = "; ".join(
            f"{len(files)} {name} (e.g. {files[0]})" for name, files in layouts.items()
        )
        raise DatasetError(
            f"dataset '{source}' mixes layouts: {found}. emu reads one layout per dataset: "
            "move one of them out, or point --data at the folder of one"
        )


def _found(root: Path) -> str:
    """What a folder holds, by kind of file, for an error that says why it was refused."""
    counts: dict[str, int] = {}
    for path in root.rglob("*"):
        if path.is_file():
            kind = path.suffix.lower() or "(no suffix)"
            counts[kind] = counts.get(kind, 0) + 1
    top = sorted(counts.items(), key=lambda kv: -kv[1])[:6]
    return ", ".join(f"{n} {suffix}" for suffix, n in top) or "no files"


def _described(error: BaseException) -> str:
    text = str(error).splitlines()[0] if str(error) else ""
    return f"{type(error).__name__}: {text[:200]}" if text else type(error).__name__


def _index_record(
    record: object, folder: Path, root: Path, seen: set[str], index: SampleIndex, where: str
) -> None:
    """One sample named by a metadata record (a JSON line, a CSV or Parquet row)."""
    name = record.get("file_name") if isinstance(record, dict) else None
    if not isinstance(name, str) or not name:
        index.rejected.append((where, "metadata line has no file_name"))
        return
    if problem := text_problem(name):
        index.rejected.append((where, f"file_name {problem}"))
        return
    if len(name) > MAX_NAME_CHARS:
        index.rejected.append(
            (where, f"file_name is {len(name)} characters, over {MAX_NAME_CHARS}")
        )
        return
    # Where the name points, by the names alone: "../" must not leave the dataset, but its files
    # may be links (the Hub's download cache links every file to a blob).
    image, base = (Path(os.path.abspath(p)) for p in (folder / name, root))
    key = str(image.relative_to(base)) if image.is_relative_to(base) else None
    if key is None:
        index.rejected.append((where, f"file_name '{name[:200]}' points outside the dataset"))
        return
    if key in seen:
        index.rejected.append((where, f"file_name '{name[:200]}' is listed again"))
        return
    seen.add(key)
    caption = _caption_from(record) or ""
    if problem := index.caption_problem(caption):
        index.rejected.append((key, problem))
    elif not image.is_file():
        index.rejected.append((key, "image file is missing"))
    elif (size := image.stat().st_size) == 0:
        index.rejected.append((key, "image file is empty (0 bytes)"))
    else:
        index.samples.append(Sample(key, caption.strip(), str(image), -1, size))


def _unsafe_member_name(name: str) -> bool:
    """A tar member name that would land outside a folder it is extracted to."""
    parts = name.replace("\\", "/").split("/")
    return name.startswith(("/", "\\")) or ".." in parts or (len(name) > 1 and name[1] == ":")


# The magic bytes of compressed files: a compressed shard has no byte offsets to read samples at.
COMPRESSIONS = {b"\x1f\x8b": "gzip", b"BZh": "bzip2", b"\xfd7zXZ\x00": "xz", b"(\xb5/\xfd": "zstd"}


def _compression(shard: Path) -> str | None:
    with open(shard, "rb") as handle:
        head = handle.read(6)
    return next((name for magic, name in COMPRESSIONS.items() if head.startswith(magic)), None)


def _index_shard(shard: Path, index: SampleIndex) -> None:
    """The shard's samples. A member that cannot be used is a reject naming the shard and the
    member; a shard that cannot be read (compressed, truncated, broken) is one reject saying how
    many of its samples were read before the damage."""
    try:
        compression = _compression(shard)
        shard_size = shard.stat().st_size
    except OSError as error:
        index.rejected.append((shard.name, f"unreadable tar shard ({error})"))
        return
    if compression:
        index.rejected.append(
            (shard.name, f"{compression}-compressed tar shard: emu reads shards uncompressed, "
             "as img2dataset writes them; decompress it")
        )  # fmt: skip
        return
    groups: dict[str, dict[str, tarfile.TarInfo]] = {}
    damage = None
    try:
        with tarfile.open(shard, "r:") as tar:
            for member in tar:
                if member.isfile():
                    _group_member(shard, member, shard_size, groups, index)
    except Exception as error:  # noqa: BLE001 - any damage: keep what was read before it
        damage = _described(error)
    if damage is not None:
        index.rejected.append(
            (shard.name, f"tar shard is damaged after {len(groups)} samples ({damage})")
        )
    with open(shard, "rb") as handle:
        for key, members in groups.items():
            where = f"{shard.name}:{key}"
            try:
                _index_group(handle, shard, where, members, index)
            except Exception as error:  # noqa: BLE001 - whatever a sample holds, one reject
                index.rejected.append((where, f"unusable sample ({_described(error)})"))


def _group_member(
    shard: Path,
    member: tarfile.TarInfo,
    shard_size: int,
    groups: dict[str, dict[str, tarfile.TarInfo]],
    index: SampleIndex,
) -> None:
    name = member.name
    where = f"{shard.name}:{name[:200]}"
    if _unsafe_member_name(name):
        index.rejected.append((where, "tar member name escapes the dataset folder"))
        return
    if text_problem(name) or len(name) > MAX_NAME_CHARS:
        index.rejected.append((where, "tar member name is not a usable name"))
        return
    if member.offset_data + member.size > shard_size:
        index.rejected.append((where, "tar member is cut off (the shard is truncated)"))
        return
    base = name.rsplit("/", 1)[-1]
    if "." not in base:
        return
    stem, extension = base.split(".", 1)
    key = f"{name[: len(name) - len(base)]}{stem}"
    members = groups.setdefault(key, {})
    if extension.lower() in members:
        index.rejected.append((where, "tar member is listed again; the first is kept"))
        return
    members[extension.lower()] = member


def _index_group(
    handle: BinaryIO,
    shard: Path,
    where: str,
    members: dict[str, tarfile.TarInfo],
    index: SampleIndex,
) -> None:
    image = next((members[e] for e in members if f".{e}" in IMAGE_EXTENSIONS), None)
    caption = None
    if "txt" in members:
        handle.seek(members["txt"].offset_data)
        try:
            caption = handle.read(members["txt"].size).decode("utf-8")
        except UnicodeDecodeError:
            index.rejected.append((where, "caption is not valid UTF-8"))
            return
    elif "json" in members:
        handle.seek(members["json"].offset_data)
        try:
            record = json.loads(handle.read(members["json"].size))
            caption = _caption_from(record) if isinstance(record, dict) else None
        except (json.JSONDecodeError, UnicodeDecodeError):
            caption = None
    if image is None:
        index.rejected.append((where, "no image member"))
    elif problem := index.caption_problem(caption):
        index.rejected.append((where, problem))
    elif image.size == 0:
        index.rejected.append((where, "image member is empty (0 bytes)"))
    else:
        index.samples.append(
            Sample(where, (caption or "").strip(), str(shard), image.offset_data, image.size)
        )


def index_dataset(source: str | Path, *, captions_for: str | None = "this work") -> SampleIndex:
    """Index an image folder or WebDataset shards (a .tar file or a folder of them), here or in
    a Hub dataset repo (``OWNER/NAME[@REVISION]``, as ``emu push --dataset`` makes them).
    ``captions_for`` names what reads the captions, for the error when there are none; None:
    nothing does, and a folder of images alone is read too."""
    from emu_cli.hub import folder_or_repo

    root, _ = folder_or_repo(str(source), "dataset", f"dataset '{source}' is not a folder here")
    if not root.exists():
        raise DatasetError(f"dataset '{source}' does not exist")
    if root.is_file():
        if root.suffix != ".tar":
            raise DatasetError(f"dataset '{source}' is a file but not a .tar shard")
        layouts = {SHARDS: [root]}
    else:
        layouts = caption_files(root)
    _refuse_mixed(source, layouts)
    empty = SampleIndex(str(root), [], captions_required=captions_for is not None)
    if metadata := layouts.get(JSON_LINES) or layouts.get(TABLES):
        index = _index_metadata(root, metadata, empty)
    elif shards := layouts.get(SHARDS):
        index = empty
        for shard in shards:
            _index_shard(shard, index)
    elif images := image_files(root):
        if any(p.with_suffix(".txt").is_file() for p in images):
            index = _index_sidecars(root, images, empty)
        elif captions_for is None:
            index = _index_uncaptioned(root, images, empty)
        else:
            raise DatasetError(
                f"dataset '{source}' holds {len(images)} images and no captions, which "
                f"{captions_for} reads: give each a NAME.txt beside it (kohya's layout; "
                "`emu data caption` writes them), or a metadata.jsonl with lines "
                '{"file_name": "images/0001.jpg", "text": "a caption"}'
            )
    else:
        raise DatasetError(
            f"dataset '{source}' is no layout emu reads (it holds {_found(root)}): an image "
            'folder with metadata.jsonl lines {"file_name": ..., "text": ...} (or '
            "metadata.csv / metadata.parquet with those columns), images with a NAME.txt "
            "caption beside each, or WebDataset .tar shards"
        )
    if not index.captions_required and any(s.caption for s in index.samples):
        # captioned data with a caption missing here and there: those are rejects, as ever;
        # only data with no caption at all is read as images alone
        for sample in [s for s in index.samples if not s.caption]:
            index.rejected.append((sample.key, "missing or empty caption"))
        index.samples = [s for s in index.samples if s.caption]
        index.captions_required = True
    if not index.samples:
        reasons = "; ".join(f"{k}: {r}" for k, r in index.rejected[:3])
        detail = f" ({len(index.rejected)} rejected, e.g. {reasons})" if index.rejected else ""
        raise DatasetError(f"dataset '{source}' has no usable sample{detail}")
    return index
