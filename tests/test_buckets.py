"""Aspect-ratio buckets: non-square images train at their own shape, a batch is one bucket,
the buckets are recorded, and a killed run still resumes to the same weights."""

import json
import math
import shutil

import numpy as np
import pytest
from PIL import Image
from safetensors.numpy import load_file

from conftest import invoke
from emu_cli.data import index_dataset
from emu_cli.data.buckets import (
    BucketBatches,
    assign_buckets,
    bucket_sizes,
    nearest_size,
)
from emu_cli.data.dataset import TrainingDataset, image_sizes


def test_bucket_sizes_keep_the_area_and_the_multiple():
    assert bucket_sizes(32, 8) == [(24, 40), (32, 32), (40, 24)]
    for width, height in bucket_sizes(1024, 64):
        assert width % 64 == 0 and height % 64 == 0 and width * height <= 1024 * 1024
        assert max(width / height, height / width) <= 2
    assert (1024, 1024) in bucket_sizes(1024, 64) and (1344, 768) in bucket_sizes(1024, 64)
    assert nearest_size(1920, 1080, bucket_sizes(1024, 64)) == (1344, 768)
    assert nearest_size(600, 800, bucket_sizes(1024, 64)) == (896, 1152)


def test_bucket_batches_are_one_bucket_each_and_resume_where_they_stopped():
    groups = [list(range(0, 7)), list(range(7, 20)), list(range(20, 23))]
    bucket = {p: g for g, members in enumerate(groups) for p in members}

    def batches(first, count, rank=0):
        return list(BucketBatches(groups, 2, 2, rank, seed=3, first=first, count=count))

    run = batches(0, 40)
    for positions in run:
        assert len({bucket[p % 23] for p in positions}) == 1, "a batch holds one bucket"
    per_epoch = sum(math.ceil(len(g) / 4) for g in groups)
    first_epoch = {p for rank in (0, 1) for b in batches(0, per_epoch, rank) for p in b}
    assert first_epoch == set(range(23)), "every sample once an epoch (the last batch filled up)"
    assert batches(13, 27) == run[13:], "the order is a function of the step: resume is exact"
    assert batches(0, 40, rank=1) != run, "each process its own slice"


def _shapes(folder):
    """16 wide images with a red left edge and a blue right edge, 8 square ones."""
    folder.mkdir()
    lines = []
    for i in range(24):
        wide = i < 16
        pixels = np.full((32, 64 if wide else 32, 3), 90 + 5 * i, np.uint8)
        if wide:
            pixels[:, :12] = (255, 0, 0)
            pixels[:, -12:] = (0, 0, 255)
        Image.fromarray(pixels).save(folder / f"{i:02d}.png")
        lines.append(json.dumps({"file_name": f"{i:02d}.png", "text": f"a shape number {i}"}))
    (folder / "metadata.jsonl").write_text("\n".join(lines) + "\n")
    return folder


@pytest.mark.slow
def test_wide_images_keep_their_sides_and_a_killed_run_resumes_exactly(tmp_path):
    data = _shapes(tmp_path / "shapes")
    out = tmp_path / "run"
    args = ("pretrain", "--backend", "latent", "--preset", "tiny", "--data", data,
            "--steps", 4, "--batch-size", 4, "--checkpoint-every", 2,
            "--preview-every", 0, "--device", "cpu")  # fmt: skip
    trained = invoke(*args, "--out", out)
    assert trained.exit_code == 0, trained.output
    assert "autoencoder at 32 px: 2 aspect buckets: 32x32 (" in trained.output
    assert "denoiser at 32 px: 2 aspect buckets: 32x32 (" in trained.output

    record = json.loads((out / "stages/autoencoder/buckets-32.json").read_text())
    assert record["multiple"] == 4 and set(record["buckets"]) == {"32x32", "40x24"}
    assert len(record["samples"]) >= 20, "every training sample's bucket (a few are held out)"
    for key, bucket in record["samples"].items():
        assert bucket == ("40x24" if int(key[:2]) < 16 else "32x32"), key

    # what the stage trained on: the whole width, scaled, its red and blue sides kept
    index = index_dataset(data)
    sizes = assign_buckets(image_sizes(index.samples), 32, 4).size_of
    view = TrainingDataset(index, 32, random_flip=False, sizes=sizes)
    wide, _, framing, _ = view[0]
    assert tuple(wide.shape) == (3, 24, 40)
    assert wide[0, :, 0].mean() > 0.9 and wide[2, :, -1].mean() > 0.9, "no side cropped away"
    # scaled to 48 x 24 to cover the bucket, 4 px cut off each side: what SDXL is told
    assert (framing.original, framing.crop, framing.size) == ((64, 32), (4, 0), (40, 24))
    square, _, _, _ = view[20]
    assert tuple(square.shape) == (3, 32, 32)

    # killed after each stage's step-2 checkpoint (the finished model taken away), it resumes
    # to the weights the uninterrupted run reached
    resumed = tmp_path / "resumed"
    shutil.copytree(out, resumed)
    (resumed / "emu.json").unlink()
    shutil.rmtree(resumed / "vae")
    shutil.rmtree(resumed / "unet")
    again = invoke(*args, "--out", resumed, "--resume", "latest")
    assert again.exit_code == 0, again.output
    assert "resuming stage 'autoencoder' from" in again.output
    assert "resuming stage 'denoiser' from" in again.output
    for weights in ("vae/diffusion_pytorch_model.safetensors",
                    "unet/diffusion_pytorch_model.safetensors"):  # fmt: skip
        first, second = load_file(out / weights), load_file(resumed / weights)
        assert all(np.array_equal(first[name], second[name]) for name in first), weights

    # quality-tuning encodes each bucket's images once, in batches of one size
    tuned = invoke("quality-tune", "--model", out, "--data", data, "--out", tmp_path / "qt",
                   "--steps", 2, "--batch-size", 4, "--no-early-stopping",
                   "--device", "cpu")  # fmt: skip
    assert tuned.exit_code == 0, tuned.output
    assert "denoiser at 32 px: 2 aspect buckets" in tuned.output
    assert "encoder calls while training: 0" in tuned.output
