"""Hostile datasets, generated: whatever a metadata line, a caption, a file name or a tar member
holds, indexing accounts for every one (a sample or a reject naming where it was) and never
fails the run. Budgets are fixed, so the suite's time is too; bench/fuzz_readers.py runs longer."""

from __future__ import annotations

import io
import json
import os
import tarfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from emu_cli.data import DatasetError, index_dataset

# The suite's budget; bench/fuzz_readers.py sets a larger one and fresh random examples.
EXAMPLES = settings(
    max_examples=int(os.environ.get("EMU_FUZZ_EXAMPLES", "100")),
    deadline=None,
    derandomize="EMU_FUZZ_EXAMPLES" not in os.environ,  # the suite's examples are the same
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


def _png(shade: int = 0, side: int = 8) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (side, side), (200, 10 + 40 * shade, 10)).save(buffer, format="PNG")
    return buffer.getvalue()


PNG = _png()
BOM = b"\xef\xbb\xbf"
JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner, max_size=3),
    max_leaves=8,
)
# Lines that broke indexing before, and their kind: deep nesting, huge numbers, lone
# surrogates, names no file system takes, and plain noise.
HOSTILE = st.one_of(
    st.binary(max_size=80),
    st.text(max_size=80).map(str.encode),
    JSON.map(lambda value: json.dumps(value).encode()),
    st.integers(1, 20_000).map(lambda depth: b"[" * depth + b"]" * depth),
    st.integers(4_000, 6_000).map(lambda digits: b'{"file_name": ' + b"9" * digits + b"}"),
    st.sampled_from(
        [
            b'{"file_name": "images/ok.png", "text": "\\ud800 lone"}',
            b'{"file_name": "\\udfff.png", "text": "a caption"}',
            b'{"file_name": "' + b"n" * 5000 + b'.png", "text": "long name"}',
            b'{"file_name": "../../etc/passwd", "text": "outside"}',
            b'{"file_name": "images/ok.png", "text": ' + b"1" * 5000 + b"}",
        ]
    ),
)
GOOD = st.integers(0, 3).map(
    lambda i: json.dumps({"file_name": f"images/{i}.png", "text": f"a red thing {i}"}).encode()
)


def _write_folder(root: Path, lines: list[bytes], bom: bool) -> None:
    (root / "images").mkdir(parents=True, exist_ok=True)
    for i in range(4):
        (root / "images" / f"{i}.png").write_bytes(_png(i, side=256))
    (root / "images" / "ok.png").write_bytes(PNG)
    (root / "metadata.jsonl").write_bytes((BOM if bom else b"") + b"\n".join(lines))


def _accounted(source: Path, lines: int) -> None:
    try:
        index = index_dataset(source)
    except DatasetError as error:  # nothing usable: said so, with the rejects counted
        assert "has no usable sample" in str(error)
        return
    assert len(index.samples) + len(index.rejected) == lines
    for where, reason in index.rejected:
        assert where and reason


@EXAMPLES
@given(lines=st.lists(st.one_of(HOSTILE, GOOD), min_size=1, max_size=12), bom=st.booleans())
def test_every_metadata_line_is_a_sample_or_a_named_reject(tmp_path_factory, lines, bom):
    lines = [line.replace(b"\n", b" ").replace(b"\r", b" ") for line in lines]
    lines = [line for line in lines if line.strip()] or [b"{}"]
    root = tmp_path_factory.mktemp("folder")
    _write_folder(root, lines, bom)
    # one byte-order mark opens a file; a first line of nothing else is an empty line
    first = lines[0] if bom else lines[0].removeprefix(BOM)
    _accounted(root, len(lines) - (not first.strip()))


def test_a_byte_order_mark_keeps_the_first_line(tmp_path):
    good = json.dumps({"file_name": "images/0.png", "text": "a red thing"}).encode()
    _write_folder(tmp_path, [good], bom=True)
    assert [s.key for s in index_dataset(tmp_path).samples] == ["images/0.png"]


def _tar(members: list[tuple[str, bytes]]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


MEMBER_NAMES = st.one_of(
    st.sampled_from(["a.png", "a.txt", "b.png", "b.txt", "b.json", "c/d.png", "c/d.txt"]),
    st.text(min_size=1, max_size=30).filter(lambda n: "\x00" not in n),
    st.sampled_from(["../up.png", "/abs.png", "x" * 3000 + ".png", "\udcff.txt"]),
)
MEMBER_DATA = st.one_of(st.just(PNG), st.binary(max_size=40), st.text(max_size=40).map(str.encode))


@EXAMPLES
@given(
    members=st.lists(st.tuples(MEMBER_NAMES, MEMBER_DATA), min_size=1, max_size=8),
    cut=st.one_of(st.none(), st.integers(1, 4000)),
)
def test_a_hostile_shard_never_fails_indexing(tmp_path_factory, members, cut):
    try:
        data = _tar(members)
    except (ValueError, UnicodeEncodeError):  # a name tarfile itself cannot write
        return
    if cut is not None:
        data = data[: max(1, len(data) - cut)]  # truncated
    shard = tmp_path_factory.mktemp("shard") / "000.tar"
    shard.write_bytes(data)
    try:
        index = index_dataset(shard)
    except DatasetError as error:
        assert "has no usable sample" in str(error)
        return
    for sample in index.samples:
        assert sample.offset + sample.size <= len(data)


def test_a_compressed_a_truncated_and_a_repeating_shard_are_named(tmp_path):
    import gzip

    shard = _tar([("a.png", PNG), ("a.txt", b"red"), ("b.png", PNG), ("b.txt", b"blue")])
    (tmp_path / "gz").mkdir()
    (tmp_path / "gz" / "000.tar").write_bytes(gzip.compress(shard))
    (tmp_path / "gz" / "001.tar").write_bytes(shard)
    index = index_dataset(tmp_path / "gz")
    assert len(index.samples) == 2
    assert index.rejected == [
        ("000.tar", "gzip-compressed tar shard: emu reads shards uncompressed, as img2dataset "
         "writes them; decompress it")
    ]  # fmt: skip

    cut = _tar([("a.png", PNG), ("a.txt", b"red"), ("b.txt", b"blue"), ("b.png", PNG)])
    with tarfile.open(fileobj=io.BytesIO(cut)) as tar:
        last = tar.getmember("b.png")
    (tmp_path / "cut.tar").write_bytes(cut[: last.offset_data + last.size // 2])  # mid-image
    index = index_dataset(tmp_path / "cut.tar")
    assert [s.key for s in index.samples] == ["cut.tar:a"]
    assert ("cut.tar:b.png", "tar member is cut off (the shard is truncated)") in index.rejected

    again = _tar([("a.png", PNG), ("a.txt", b"red"), ("a.txt", b"blue")])
    (tmp_path / "again.tar").write_bytes(again)
    index = index_dataset(tmp_path / "again.tar")
    assert [(s.key, s.caption) for s in index.samples] == [("again.tar:a", "red")]
    assert index.rejected == [("again.tar:a.txt", "tar member is listed again; the first is kept")]


@pytest.mark.slow
def test_emu_filter_accounts_for_every_line_of_a_hostile_pool(tmp_path):
    from conftest import emu

    hostile = [
        b"[" * 20_000 + b"]" * 20_000,
        b'{"file_name": ' + b"9" * 5000 + b"}",
        b'{"file_name": "images/ok.png", "text": "\\ud800 lone"}',
        b'{"file_name": "' + b"n" * 5000 + b'.png", "text": "long name"}',
        b"\xff\xfe not utf-8",
    ]
    good = [json.dumps({"file_name": f"images/{i}.png", "text": f"thing {i}"}).encode()
            for i in range(4)]  # fmt: skip
    _write_folder(tmp_path / "pool", good[:2] + hostile + good[2:], bom=True)
    result = emu("filter", "--data", tmp_path / "pool", "--out", tmp_path / "run",
                 "--filters", "size", "--workers", 1)  # fmt: skip
    assert "Traceback" not in result.stderr
    import pandas as pd

    manifest = pd.read_parquet(tmp_path / "run" / "manifest.parquet")
    assert len(manifest) == len(good) + len(hostile)
    assert (manifest["status"] == "kept").sum() == len(good)
