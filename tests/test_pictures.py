"""What people look at: grids a person can read, outputs that are this run's alone, and the
trackers they watch (TensorBoard's event files, read back with TensorBoard's own reader)."""

import json

import numpy as np
from PIL import Image

from conftest import invoke, pretrain_tiny
from emu_cli.images import MIN_TILE, make_grid, tile_size


def test_grid_tiles_are_large_with_the_caption_under_each():
    tiny = [Image.new("RGB", (32, 32), (200, 20 * i, 0)) for i in range(5)]
    grid = make_grid(tiny, captions=[f"a red star number {i} on a sunset" for i in range(5)])
    assert tile_size(32, 32) == (256, 256) and tile_size(100, 50) == (600, 300)
    assert tile_size(1024, 768) == (512, 384), "large images are shrunk, not tiled at 1024"
    columns, rows = 3, 2  # 5 images: near-square
    assert grid.width >= columns * MIN_TILE and grid.height > rows * MIN_TILE
    pixels = np.asarray(grid)
    # nearest-neighbour: one source pixel is an 8 x 8 block of one colour
    assert (pixels[6:14, 6:14] == pixels[6, 6]).all()
    under_first_tile = pixels[6 + 256 : 6 + 256 + 20, 6 : 6 + 256]
    assert (under_first_tile < 100).any(), "the caption is drawn under the tile"
    bare = np.asarray(make_grid(tiny))
    assert bare.shape[0] < pixels.shape[0], "no caption strip without captions"


def test_generate_replaces_its_earlier_outputs_and_captions_the_grid(tiny_latent, tmp_path):
    out = tmp_path / "samples"
    first = invoke("generate", "--model", tiny_latent, "a red star", "a blue ring", "-n", 2,
                   "--sampling-steps", 2, "--out", out, "--device", "cpu")  # fmt: skip
    assert first.exit_code == 0, first.output
    (out / "notes.txt").write_text("mine")
    again = invoke("generate", "--model", tiny_latent, "a green square", "-n", 1,
                   "--sampling-steps", 2, "--out", out, "--device", "cpu")  # fmt: skip
    assert again.exit_code == 0, again.output
    names = sorted(p.name for p in out.iterdir())
    assert names == ["000-00.png", "grid.png", "index.json", "notes.txt"], names
    index = json.loads((out / "index.json").read_text())
    assert [r["text"] for r in index["images"]] == ["a green square"]
    with Image.open(out / "grid.png") as grid:
        assert min(grid.size) > MIN_TILE, grid.size


def test_report_to_tensorboard_writes_events_tensorboard_reads(world, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = tmp_path / "run"
    pretrain_tiny(world, out, "--steps", 4, "--batch-size", 4, "--preview-every", 2,
                  "--validate-every", 2, "--validation-max-prompts", 2,
                  "--validation-sampling-steps", 2, "--report-to", "tensorboard")  # fmt: skip
    events = EventAccumulator(str(out / "logs" / "emu"), size_guidance={"images": 0})
    events.Reload()
    tags = events.Tags()
    # the stages' steps go on from one to the next, as a tracker expects steps to rise
    assert [e.step for e in events.Scalars("autoencoder/loss")] == [1, 2, 3, 4]
    assert [e.step for e in events.Scalars("denoiser/loss")] == [5, 6, 7, 8]
    logged = [json.loads(line) for line in (out / "stages/denoiser/log.jsonl").open()]
    losses = [r["loss"] for r in logged if "loss" in r]
    assert np.allclose([e.value for e in events.Scalars("denoiser/loss")], losses)
    assert {"denoiser/lr", "denoiser/images_per_second"} <= set(tags["scalars"])
    assert [e.step for e in events.Scalars("denoiser/validation_appeal")] == [4, 6, 8]
    image = events.Images("denoiser/validation")[-1]
    assert image.step == 8 and image.width >= 2 * MIN_TILE, "the judged grid, readable"
    assert "denoiser/preview" in tags["images"]
