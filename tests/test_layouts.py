"""The dataset layouts people already have, read by the one reader and used by every command
that takes --data: metadata.csv and metadata.parquet image folders, and images with a caption
file beside each (kohya's and SimpleTuner's layout, nested folders too), and folders of images
alone for the work that reads no captions."""

import json
import shutil

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from conftest import invoke
from emu_cli.data import index_dataset

LAYOUTS = ("csv", "parquet", "sidecar")
SAMPLES = 48


def _as(layout, world, folder):
    """The world's first 48 samples in ``layout``: the same images, the same captions."""
    lines = (world / "metadata.jsonl").read_text().splitlines()[:SAMPLES]
    records = [json.loads(line) for line in lines]
    if layout == "sidecar":  # nested one level deeper, as people sort their photos
        for record in records:
            image = folder / "photos" / record["file_name"]
            image.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(world / record["file_name"], image)
            image.with_suffix(".txt").write_text(record["text"] + "\n")
        return folder
    (folder / "images").mkdir(parents=True)
    for record in records:
        shutil.copy(world / record["file_name"], folder / record["file_name"])
    columns = {"file_name": [r["file_name"] for r in records], "text": [r["text"] for r in records]}
    if layout == "parquet":
        pq.write_table(pa.table(columns), folder / "metadata.parquet")
    else:
        rows = ["file_name,text", *(f'{n},"{t}"' for n, t in zip(*columns.values(), strict=True))]
        (folder / "metadata.csv").write_text("\n".join(rows) + "\n")
    return folder


@pytest.mark.parametrize("layout", LAYOUTS)
def test_each_layout_is_read_as_the_same_samples_and_used_by_every_command(
    layout, world, tiny_latent, tmp_path
):
    data = _as(layout, world, tmp_path / layout)
    original = {s.key: s.caption for s in index_dataset(world).samples[:SAMPLES]}
    read = {s.key.removeprefix("photos/"): s.caption for s in index_dataset(data).samples}
    assert read == original
    pretrained = invoke("pretrain", "--backend", "latent", "--preset", "tiny", "--data", data,
                        "--out", tmp_path / "pre", "--steps", 2, "--stage", "autoencoder",
                        "--device", "cpu")  # fmt: skip
    assert pretrained.exit_code == 0, pretrained.output
    # the run says what it will do before the first step, and keeps it beside the model
    said = pretrained.output
    plan = json.loads((tmp_path / "pre" / "plan.json").read_text())
    assert plan["samples"] == len(original) and plan["stages"][0]["steps"] == 2
    assert f"data: {data}: {len(original)} samples, 0 skipped" in said
    assert "stage autoencoder: 2 steps, batch" in said and "(all read)" in said
    assert said.index("emu pretrain: backend latent (preset tiny)") < said.index(
        "autoencoder: 2 steps, loss"
    )
    tuned = invoke("quality-tune", "--model", tiny_latent, "--data", data, "--out",
                   tmp_path / "qt", "--steps", 2, "--no-early-stopping",
                   "--device", "cpu")  # fmt: skip
    assert tuned.exit_code == 0, tuned.output
    assert "stage quality-tune: 2 steps" in tuned.output
    assert "validation: none (--no-early-stopping)" in tuned.output
    filtered = invoke("filter", "--data", data, "--out", tmp_path / "run", "--filters", "size",
                      "--set", "size.min_side=16", "--workers", 1)  # fmt: skip
    assert filtered.exit_code == 0, filtered.output
    assert f" of {len(original)} (" in filtered.output, "every sample reached the filters"


def test_a_folder_of_images_alone_serves_the_work_that_reads_no_captions(
    world, tiny_latent, tmp_path
):
    bare = tmp_path / "bare" / "holiday"
    bare.mkdir(parents=True)
    for image in sorted((world / "images").iterdir())[:SAMPLES]:
        shutil.copy(image, bare)
    tiny = ("--backend", "latent", "--preset", "tiny", "--data", bare, "--steps", 2,
            "--device", "cpu")  # fmt: skip
    trained = invoke("pretrain", *tiny, "--out", tmp_path / "ae", "--stage", "autoencoder")
    assert trained.exit_code == 0, trained.output
    assert f"{SAMPLES} samples, 0 skipped" in trained.output
    filtered = invoke("filter", "--data", bare, "--out", tmp_path / "run", "--filters",
                      "size,duplicates", "--set", "size.min_side=16", "--workers", 1)  # fmt: skip
    assert filtered.exit_code == 0 and f" of {SAMPLES} (" in filtered.output, filtered.output
    # the defaults on 32 px images: what could not run is named, and so is what rejected all
    defaults = invoke("filter", "--data", bare, "--out", tmp_path / "defaults", "--workers", 1)
    assert defaults.exit_code == 0, defaults.output
    assert "not run: clip_score, aesthetic, concepts (the CLIP-based filters need" in (
        defaults.output
    )
    assert f"every sample was rejected, {SAMPLES} by size (min_side=200" in defaults.output

    # work that reads captions is refused before it starts, naming what reads them
    for command, reader in (
        (("pretrain", *tiny, "--out", tmp_path / "dn", "--stage", "denoiser"), "stage denoiser"),
        (("quality-tune", "--model", tiny_latent, "--data", bare, "--out", tmp_path / "qt",
          "--no-early-stopping"), "quality-tuning"),
        (("filter", "--data", bare, "--out", tmp_path / "cw", "--filters", "size,caption_words"),
         "filter caption_words"),
    ):  # fmt: skip
        refused = invoke(*command)
        assert refused.exit_code == 1, refused.output
        assert f"holds {SAMPLES} images and no captions, which {reader} reads" in refused.output
        assert '{"file_name": "images/0001.jpg", "text": "a caption"}' in refused.output
    assert not (tmp_path / "dn" / "stages").exists() and not (tmp_path / "qt" / "stages").exists()


def test_a_layout_emu_does_not_read_is_refused_with_what_was_found(world, tmp_path):
    mixed = tmp_path / "mixed"  # two layouts claim the images: which one is meant is not guessed
    shutil.copytree(world, mixed)
    (mixed / "old.tar").write_bytes(b"")
    refused = invoke("filter", "--data", mixed, "--out", tmp_path / "m", "--filters", "size")
    assert refused.exit_code == 1
    assert "mixes layouts: 1 metadata.jsonl files" in refused.output
    assert "1 .tar shards (e.g." in refused.output and "emu reads one layout" in refused.output
    odd = tmp_path / "odd"
    odd.mkdir()
    for name in ("a.docx", "b.docx", "notes.md"):
        (odd / name).write_text("x")
    refused = invoke("filter", "--data", odd, "--out", tmp_path / "b", "--filters", "size")
    assert refused.exit_code == 1 and "it holds 2 .docx, 1 .md" in refused.output
    assert "NAME.txt caption beside each" in refused.output
    half = tmp_path / "half"  # sidecars for some: the others are rejects, named
    shutil.copytree(world / "images", half)
    images = sorted(half.iterdir())
    for image in images[:5]:
        image.with_suffix(".txt").write_text("a caption")
    index = index_dataset(half)
    assert len(index.samples) == 5 and len(index.rejected) == len(images) - 5
    assert index.rejected[0][1] == f"no caption file {images[5].stem}.txt beside it"
