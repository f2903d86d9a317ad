"""Open models made elsewhere (SDXL, SD3, Flux), adopted by the latent backend: the whole recipe
on tiny folders of their classes, SDXL's micro-conditioning, frozen text encoders out of memory
during quality-tuning's steps."""

import json
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import emu, evaluate_push_and_load


@pytest.fixture(scope="module")
def stable_diffusion_xl(tmp_path_factory):
    """An SDXL folder made with diffusers alone, at a tiny size."""
    from emu_latent_diffusion.foreign import save_tiny_stable_diffusion_xl

    return save_tiny_stable_diffusion_xl(tmp_path_factory.mktemp("elsewhere") / "sdxl")


@pytest.fixture(scope="module")
def stable_diffusion_3(tmp_path_factory):
    """An SD3 folder made with diffusers alone, at a tiny size."""
    from emu_latent_diffusion.foreign import save_tiny_stable_diffusion_3

    return save_tiny_stable_diffusion_3(tmp_path_factory.mktemp("elsewhere") / "sd3")


@pytest.fixture(scope="module")
def flux(tmp_path_factory):
    """A Flux.1 dev folder made with diffusers alone, at a tiny size."""
    from emu_latent_diffusion.foreign import save_tiny_flux

    return save_tiny_flux(tmp_path_factory.mktemp("elsewhere") / "flux")


# family: (its fixture, pipeline class, objective, the denoiser, the frozen text encoders)
OPEN_MODELS = {
    "sdxl": ("stable_diffusion_xl", "StableDiffusionXLPipeline", "epsilon", "unet",
             ("text_encoder", "text_encoder_2")),
    "sd3": ("stable_diffusion_3", "StableDiffusion3Pipeline", "flow_prediction", "transformer",
            ("text_encoder", "text_encoder_2", "text_encoder_3")),
    "flux": ("flux", "FluxPipeline", "flow_prediction", "transformer",
             ("text_encoder", "text_encoder_2")),
}  # fmt: skip


@pytest.mark.parametrize("family", OPEN_MODELS)
def test_an_open_model_made_elsewhere_goes_through_the_whole_recipe(
    family, request, world, tmp_path
):
    """Adopted and quality-tuned (the denoiser moves, the text encoders and the autoencoder do
    not), opened by its own pipeline class, evaluated against its parent (both generate),
    pushed to the Hub with a card that loads it that way, and drawn from by its repo name at
    its own size, the same image as from the folder."""
    import diffusers
    from safetensors.torch import load_file

    fixture, pipeline_class, objective, denoiser, encoders = OPEN_MODELS[family]
    parent = request.getfixturevalue(fixture)
    qt = tmp_path / "qt"
    emu("quality-tune", "--model", parent, "--data", world, "--out", qt, "--steps", 2,
        "--subset", 32, "--no-early-stopping", "--device", "cpu")  # fmt: skip
    record = json.loads((qt / "emu.json").read_text())
    assert record["options"]["prediction_type"] == objective
    for component in (denoiser, "vae", *encoders):
        name = "model" if component.startswith("text") else "diffusion_pytorch_model"
        before, after = (load_file(folder / component / f"{name}.safetensors")
                         for folder in (parent, qt))  # fmt: skip
        moved = any(not torch.equal(before[k], after[k]) for k in before)
        assert moved == (component == denoiser), component
    pipe = getattr(diffusers, pipeline_class).from_pretrained(qt)
    drawn = pipe("a red star", num_inference_steps=2, height=32, width=32, output_type="np",
                 generator=torch.Generator().manual_seed(0)).images  # fmt: skip
    assert drawn.shape == (1, 32, 32, 3) and np.isfinite(drawn).all()
    card = evaluate_push_and_load(qt, parent, f"me/{family}-qt", tmp_path)
    assert f'{pipeline_class}.from_pretrained("me/{family}-qt")' in card


def test_sdxl_is_conditioned_on_each_training_image_size_and_crop(stable_diffusion_xl, tmp_path):
    """SDXL's micro-conditioning comes from the real images: a 64 x 40 photo trained at 32 px
    is scaled to 51.2 x 32 and cut 10 px in from the left, so its time ids read original
    (40, 64), crop (0, 10), target (32, 32); a 20 px square is upscaled, uncut. The UNet sees
    them: other time ids, another loss."""
    from emu_cli.checkpoint.folder import load_checkpoint
    from emu_cli.data import index_dataset
    from emu_cli.data.dataset import TrainingDataset, collate
    from emu_cli.plugin.backend import encode_batch
    from emu_cli.training.recipe import Recipe

    folder = tmp_path / "photos"
    folder.mkdir()
    for name, size in (("wide", (64, 40)), ("small", (20, 20))):
        Image.new("RGB", size, (200, 30, 30)).save(folder / f"{name}.png")
        (folder / f"{name}.txt").write_text(f"a {name} red picture")
    backend, model, _ = load_checkpoint(stable_diffusion_xl)
    index = index_dataset(folder)
    keys = [sample.key for sample in index.samples]
    images, captions, framings, _ = collate(
        [TrainingDataset(index, 32, random_flip=False)[i] for i in range(len(keys))]
    )
    batch = encode_batch(backend, model, "denoiser", images, captions, framings)
    rows = dict(zip(keys, batch["time_ids"].tolist(), strict=True))
    assert rows == {"wide.png": [40, 64, 0, 10, 32, 32], "small.png": [20, 20, 0, 0, 32, 32]}

    module = backend.training_module(model, "denoiser", Recipe())
    losses = []
    for ids in (batch["time_ids"], torch.zeros_like(batch["time_ids"])):
        generator = torch.Generator().manual_seed(0)
        losses.append(module({**batch, "time_ids": ids, "generator": generator})["loss"])
    assert not torch.equal(*losses)


def test_frozen_text_encoders_leave_memory_while_quality_tuning_steps_run(
    stable_diffusion_xl, world, tmp_path
):
    """SDXL's two frozen text encoders run once per caption before the first step (their
    outputs cached), never between the first step and the last, and hold no weights (meta
    device) at any training step; they are read again from the folder to save, so the
    checkpoints and the tuned folder carry them unchanged. The plan says so."""
    import gc

    from safetensors.torch import load_file
    from torch.nn.modules.module import register_module_forward_pre_hook
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    parent = shutil.copytree(stable_diffusion_xl, tmp_path / "sdxl")  # a path no other test loads
    encoders = (CLIPTextModel, CLIPTextModelWithProjection)

    def resident() -> int:
        gc.collect()
        loaded = [m for m in gc.get_objects() if isinstance(m, encoders)
                  and m.config._name_or_path.startswith(str(parent))]  # fmt: skip
        return sum(any(p.device.type != "meta" for p in m.parameters()) for m in loaded)

    events: list = []

    def watch(module, args):
        if isinstance(module, encoders):
            events.append("text")
        elif type(module).__name__ == "UNet2DConditionModel" and torch.is_grad_enabled():
            events.append(("step", resident()))  # a training step's forward

    config = tmp_path / "run.yaml"
    config.write_text("checkpoint_every: 2\n")
    qt = tmp_path / "qt"
    handle = register_module_forward_pre_hook(watch)
    try:
        emu("quality-tune", "--model", parent, "--data", world, "--out", qt, "--steps", 4,
            "--config", config, "--no-early-stopping", "--device", "cpu")  # fmt: skip
    finally:
        handle.remove()
    steps = [i for i, event in enumerate(events) if event != "text"]
    assert [events[i] for i in steps] == [("step", 0)] * 4, "no text encoder holds weights"
    assert "text" in events[: steps[0]] and "text" not in events[steps[0] : steps[-1]]
    assert json.loads((qt / "plan.json").read_text())["set_aside"] == [
        "text_encoder",
        "text_encoder_2",
    ]
    for folder in (qt, qt / "stages" / "quality-tune" / "checkpoints" / "step-00000002" / "model"):
        for component in ("text_encoder", "text_encoder_2"):
            before, after = (
                load_file(f / component / "model.safetensors") for f in (parent, folder)
            )
            assert all(torch.equal(before[k], after[k]) for k in before), (folder, component)


def test_a_row_missed_while_text_encoders_are_set_aside_is_encoded_whole(stable_diffusion_xl):
    """A caption the cache's warm-up did not foresee, met during the steps: its row is
    encoded with the text encoder read back, as it would have been, which then leaves again."""
    from emu_cli import Framing
    from emu_cli.checkpoint.folder import load_checkpoint
    from emu_cli.plugin.backend import encode_batch
    from emu_cli.training.cache import EncodingCache
    from emu_cli.training.set_aside import SetAside

    backend, model, _ = load_checkpoint(stable_diffusion_xl)
    folder = stable_diffusion_xl
    set_aside = SetAside(model, backend.encoding_components(model, "denoiser"), folder)
    assert set_aside.names == ("text_encoder", "text_encoder_2")
    images, captions = torch.zeros(1, 3, 32, 32), ["a caption never seen"]
    framings = [Framing((32, 32), (0, 0), (32, 32))]
    expected = encode_batch(backend, model, "denoiser", images, captions, framings)
    set_aside.release()
    assert model["text_encoder"].device.type == "meta"
    cache = EncodingCache(backend, whole=set_aside.whole)
    encoded = cache.encode(model, "denoiser", images, captions, framings)
    assert torch.equal(encoded["states"], expected["states"])
    assert set_aside.released and model["text_encoder_2"].device.type == "meta"
