import io
import json
import tarfile

import pytest
import torch
from PIL import Image

from emu_cli.data import DatasetError, index_dataset
from emu_cli.data.dataset import StepBatches, TrainingDataset, collate


def _png(color=(200, 10, 10), size=(40, 30), mode="RGB") -> bytes:
    buffer = io.BytesIO()
    Image.new(mode, size, color).save(buffer, format="PNG")
    return buffer.getvalue()


def _imagefolder(root, entries):
    (root / "images").mkdir(parents=True)
    lines = []
    for name, data, caption in entries:
        if data is not None:
            (root / "images" / name).write_bytes(data)
        record = {"file_name": f"images/{name}"}
        if caption is not None:
            record["text"] = caption
        lines.append(json.dumps(record))
    (root / "metadata.jsonl").write_text("\n".join(lines) + "\n")
    return root


def test_imagefolder_and_webdataset_read_the_same_samples(tmp_path, world):
    from emu_cli.world.synth import synthesize

    shards = synthesize(160, tmp_path / "wds", seed=1, size=32, format="webdataset", workers=1)
    folder, tars = index_dataset(world), index_dataset(shards)
    assert len(folder) == len(tars) == 160
    assert [s.caption for s in folder.samples] == [s.caption for s in tars.samples]
    a = TrainingDataset(folder, 16, random_flip=False)[3][0]
    b = TrainingDataset(tars, 16, random_flip=False)[3][0]
    assert a.shape == (3, 16, 16) and torch.equal(a, b)
    assert a.min() >= -1.0 and a.max() <= 1.0


def test_bad_samples_are_skipped_counted_and_named(tmp_path):
    good = _png()
    root = _imagefolder(
        tmp_path / "d",
        [
            ("good1.png", good, "a red thing"),
            ("truncated.png", good[: len(good) // 2], "cut short"),
            ("empty.png", b"", "zero bytes"),
            ("text.png", b"this is not an image at all", "not an image"),
            ("nocaption.png", good, None),
            ("missing.png", None, "file is gone"),
            ("good2.png", _png((10, 200, 10)), "a green thing"),
        ],
    )
    index = index_dataset(root)
    reasons = dict(index.rejected)
    assert reasons["images/empty.png"].startswith("image file is empty")
    assert reasons["images/nocaption.png"] == "missing or empty caption"
    assert reasons["images/missing.png"] == "image file is missing"
    assert len(index) == 4  # decoding failures are found when reading, not when indexing
    dataset = TrainingDataset(index, 16, random_flip=False)
    images, captions, _, skipped = collate([dataset[i] for i in range(len(dataset))])
    assert images.shape == (4, 3, 16, 16)
    assert {key for key, _ in skipped} == {"images/truncated.png", "images/text.png"}
    assert set(captions) <= {"a red thing", "a green thing"}


def test_webdataset_member_without_caption_and_corrupt_image(tmp_path):
    shard = tmp_path / "000.tar"
    with tarfile.open(shard, "w") as tar:
        for name, data in [
            ("a.jpg", _png()),
            ("a.txt", b"a caption"),
            ("b.jpg", b"garbage"),
            ("b.txt", b"broken image"),
            ("c.jpg", _png()),
            ("d.json", json.dumps({"caption": "json only"}).encode()),
            ("d.png", _png()),
        ]:
            member = tarfile.TarInfo(name)
            member.size = len(data)
            tar.addfile(member, io.BytesIO(data))
    index = index_dataset(shard)
    assert [s.caption for s in index.samples] == ["a caption", "broken image", "json only"]
    assert index.rejected == [("000.tar:c", "missing or empty caption")]
    _, _, _, skipped = TrainingDataset(index, 8)[1]
    assert skipped and skipped[0][0] == "000.tar:b"


def test_transparency_cmyk_and_exif_rotation(tmp_path):
    rgba = io.BytesIO()
    Image.new("RGBA", (20, 10), (0, 0, 0, 0)).save(rgba, format="PNG")
    cmyk = io.BytesIO()
    Image.new("CMYK", (20, 10), (0, 255, 255, 0)).save(cmyk, format="JPEG")
    rotated = io.BytesIO()
    image = Image.new("RGB", (20, 10), (0, 0, 255))
    exif = image.getexif()
    exif[0x0112] = 6  # rotate 90 degrees on display
    image.save(rotated, format="JPEG", exif=exif)
    root = _imagefolder(
        tmp_path / "d",
        [
            ("t.png", rgba.getvalue(), "clear"),
            ("c.jpg", cmyk.getvalue(), "cmyk"),
            ("r.jpg", rotated.getvalue(), "rotated"),
        ],
    )
    from emu_cli.data.dataset import read_image

    index = index_dataset(root)
    transparent, cmyk_image, upright = (read_image(s) for s in index.samples)
    assert transparent.getpixel((5, 5)) == (255, 255, 255)  # composited on white, not black
    assert cmyk_image.mode == "RGB" and cmyk_image.getpixel((5, 5))[0] > 200
    assert upright.size == (10, 20)


def test_images_a_resolution_would_upscale_are_counted_by_their_shorter_side(tmp_path):
    from emu_cli.training.plan import measure_sides

    root = _imagefolder(
        tmp_path / "d",
        [
            ("wide.png", _png(size=(64, 20)), "short side 20"),
            ("big.png", _png(size=(48, 40)), "short side 40"),
            ("broken.png", b"\x89PNG not really", "unreadable: not counted"),
        ],
    )
    sides = measure_sides(index_dataset(root))
    assert [sides.smaller_than(side) for side in (16, 32, 48)] == [0, 1, 2]
    assert (sides.read, sides.of) == (3, 3)
    assert sides.describe() == "shorter side 20-40 px, median 40 px (all read)"
    sampled = measure_sides(index_dataset(root), limit=2)
    assert sampled.read == 2 and "a sample of 2 of 3" in sampled.describe()


@pytest.mark.parametrize("make", ["missing", "empty-folder", "no-usable"])
def test_unusable_dataset_is_a_clear_error(tmp_path, make):
    target = tmp_path / "data"
    if make == "empty-folder":
        target.mkdir()
    elif make == "no-usable":
        _imagefolder(target, [("x.png", b"", "empty")])
    with pytest.raises(DatasetError, match=str(target)):
        index_dataset(target)


def test_step_batches_cover_each_epoch_once_and_split_across_processes():
    single = list(StepBatches(10, 4, 1, 0, seed=3, first=0, count=5))
    flat = [p for batch in single for p in batch]
    assert sorted(p % 10 for p in flat[:10]) == list(range(10))
    assert sorted(p % 10 for p in flat[10:20]) == list(range(10))
    assert all(p >= 10 for p in flat[10:20])  # the second epoch carries its number
    rank0 = list(StepBatches(10, 2, 2, 0, seed=3, first=0, count=5))
    rank1 = list(StepBatches(10, 2, 2, 1, seed=3, first=0, count=5))
    assert [a + b for a, b in zip(rank0, rank1, strict=True)] == single
    resumed = list(StepBatches(10, 4, 1, 0, seed=3, first=2, count=3))
    assert resumed == single[2:]


def test_caption_dropout_and_flip_are_deterministic(world):
    index = index_dataset(world)
    dataset = TrainingDataset(index, 16, seed=5, caption_dropout=0.5)
    first = [dataset[i] for i in range(40)]
    again = [dataset[i] for i in range(40)]
    assert [c for _, c, _, _ in first] == [c for _, c, _, _ in again]
    assert all(torch.equal(a[0], b[0]) for a, b in zip(first, again, strict=True))
    dropped = sum(c == "" for _, c, _, _ in first)
    assert 8 <= dropped <= 32
