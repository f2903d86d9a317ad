"""The pixel-diffusion backend plugin: its contract with the core, its pipeline, its options."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import emu, evaluate_push_and_load, train_stage


@pytest.fixture(scope="session")
def tiny_pixel(tmp_path_factory, world):
    """A tiny pixel model (16 px base, 2x super-resolution) pre-trained through the real CLI."""
    out = tmp_path_factory.mktemp("runs") / "pixel"
    emu(
        "pretrain", "--backend", "pixel", "--preset", "tiny", "--data", world, "--out", out,
        "--device", "cpu", "--steps", 6, "--batch-size", 8, "--preview-every", 0,
    )  # fmt: skip
    return out


def test_listed_as_a_plugin_of_its_own():
    listed = json.loads(emu("backends", "--json").stdout)
    pixel = [p for p in listed["plugins"] if p["name"] == "pixel"]
    assert pixel and pixel[0]["distribution"] == "emu-pixel-diffusion"
    assert pixel[0]["backends"] == ["pixel"]


@pytest.mark.slow
def test_pretrain_generate_reload_gives_the_same_images(tiny_pixel, tmp_path):
    provenance = json.loads((tiny_pixel / "emu.json").read_text())
    assert provenance["stages_completed"] == ["denoiser", "superres"]
    assert provenance["options"]["prediction_type"] == "v_prediction"
    index = json.loads((tiny_pixel / "model_index.json").read_text())
    assert index["_class_name"] == "PixelDiffusionPipeline"

    prompt = "a red star on a sunset background"
    runs = []
    for name in ("first", "second"):
        emu("generate", "--model", tiny_pixel, prompt, "-n", 2, "--sampling-steps", 4, "--seed", 5,
            "--out", tmp_path / name, "--device", "cpu")  # fmt: skip
        runs.append([np.asarray(Image.open(tmp_path / name / f"000-0{i}.png")) for i in (0, 1)])
    assert runs[0][0].shape == (32, 32, 3), "the 2x super-resolution stage sets the output size"
    assert all(np.array_equal(a, b) for a, b in zip(runs[0], runs[1], strict=True))
    assert not np.array_equal(runs[0][0], runs[0][1]), "different seeds, different images"

    # The documented Python call, without emu, at its default guidance: the same seeds give the
    # same images (batched as emu batched them: a batch's arithmetic can differ in the last bit).
    from emu_pixel_diffusion import PixelDiffusionPipeline

    pipe = PixelDiffusionPipeline.from_pretrained(tiny_pixel)
    generators = [torch.Generator().manual_seed(seed) for seed in (5, 6)]
    images = pipe([prompt] * 2, num_inference_steps=4, generator=generators).images
    assert all(np.array_equal(np.asarray(a), b) for a, b in zip(images, runs[0], strict=True))
    base = pipe([prompt], num_inference_steps=4, upscale=False).images[0]
    assert base.size == (16, 16)


def test_options_are_checked_and_a_t5_encoder_trains(world, tmp_path):
    from emu_cli.plugin.registry import get_backend

    backend = get_backend("pixel")
    with pytest.raises(ValueError, match="no option colour"):
        backend.build("tiny", {"colour": "red"})
    with pytest.raises(ValueError, match="superres_factor must be"):
        backend.build("tiny", {"superres_factor": 3})
    with pytest.raises(ValueError, match="snr_weighting must be one of"):
        backend.build("tiny", {"snr_weighting": "max"})
    assert backend.default_stages("small", {}) == ["denoiser"], "no super-resolution on CPU"
    assert backend.default_stages("small", {"superres_factor": 2}) == ["denoiser", "superres"]

    model = backend.build("tiny", {"text_encoder_kind": "t5", "prediction_type": "epsilon"})
    assert type(model["text_encoder"]).__name__ == "T5EncoderModel"
    result = train_stage(
        backend, model, "denoiser", world, tmp_path / "t5", steps=2, batch_size=2,
        resolution=16, checkpoint_every=0, preview_every=0,
    )  # fmt: skip
    assert result.steps == 2 and np.isfinite(result.final_loss)


def test_pretrain_cli_passes_backend_options(world, tmp_path):
    out = tmp_path / "run"
    result = emu(
        "pretrain", "--backend", "pixel", "--preset", "tiny", "--data", world, "--out", out,
        "--device", "cpu", "--steps", 1, "--batch-size", 2, "--preview-every", 0,
        "--option", "superres_factor=1", "--option", "snr_weighting=min",
    )  # fmt: skip
    assert "superres" not in result.stdout
    options = json.loads((out / "emu.json").read_text())["options"]
    assert options["superres_factor"] == 1 and options["snr_weighting"] == "min"
    assert not (out / "sr_unet").exists()
    bad = emu("pretrain", "--backend", "pixel", "--preset", "tiny", "--data", world,
              "--out", tmp_path / "bad", "--option", "superres_factor", check=False)  # fmt: skip
    assert bad.returncode != 0 and "expected KEY=VALUE" in bad.stderr


def test_snr_weightings():
    from emu_cli.kit.diffusion import snr_weights

    ratio = torch.tensor([0.01, 1.0, 5.0, 100.0])
    hard = snr_weights(ratio, "min", 5.0, "epsilon")
    soft = snr_weights(ratio, "soft-min", 5.0, "epsilon")
    assert torch.allclose(hard, torch.tensor([1.0, 1.0, 1.0, 0.05]))
    # The soft minimum is below the hard one and meets it far from gamma on both sides.
    assert (soft <= hard + 1e-6).all()
    assert torch.allclose(soft[[0, 3]], hard[[0, 3]], rtol=0.05)
    assert soft[2] == pytest.approx(0.5)  # at SNR = gamma: half the hard weight
    v = snr_weights(ratio, "soft-min", 5.0, "v_prediction")
    assert torch.allclose(v, soft * ratio / (ratio + 1))
    assert torch.equal(snr_weights(ratio, "none", 5.0, "epsilon"), torch.ones(4))


@pytest.mark.slow
def test_generated_images_are_judged_per_attribute(tiny_pixel):
    from emu_cli.world.concepts import HELD_OUT_SUBJECTS, SUBJECTS
    from emu_cli.world.validation import validate_generator

    result = validate_generator(tiny_pixel, per_subject=2, steps=3)
    held_in = [s for s in SUBJECTS if s not in HELD_OUT_SUBJECTS]
    assert result["subjects"] == held_in and result["images"] == 2 * len(held_in)
    for name in ("subject", "color", "background", "all"):
        assert 0 <= result[f"{name}_accuracy"] <= 1
    assert result["all_accuracy"] <= min(result[f"{n}_accuracy"] for n in result["chance"])
    assert 0 < result["mean_appeal"] < 1
    assert result["image_size"] == 32  # the tiny preset's 16 px base, 2x super-resolution


def test_a_pools_own_images_are_judged_against_what_they_show(world):
    """The reference a generator's figures are read against: its training data, judged the same
    way. The pool's images are judged far above chance on every attribute."""
    from emu_cli.world.validation import validate_pool_images

    result = validate_pool_images(world, 32, subjects=("circle", "square", "star"))
    assert result["subjects"] == ["circle", "square", "star"] and 10 < result["images"] < 160
    for name, chance in result["chance"].items():
        assert result[f"{name}_accuracy"] > 2 * chance, (name, result)


def test_a_deepfloyd_if_model_made_elsewhere_goes_through_the_whole_recipe(world, tmp_path):
    """IF's stage I, adopted and quality-tuned (the UNet moves, T5 does not and is out of
    memory during the steps), opened by IFPipeline, evaluated against its parent (both
    generate), pushed with a card that loads it with IFPipeline, drawn from by its repo name
    at its own size, the same image as from the folder."""
    from diffusers import IFPipeline
    from emu_pixel_diffusion.foreign import save_tiny_deepfloyd_if
    from safetensors.torch import load_file

    parent = save_tiny_deepfloyd_if(tmp_path / "if")
    qt = tmp_path / "qt"
    tuned = emu("quality-tune", "--model", parent, "--data", world, "--out", qt, "--steps", 2,
                "--subset", 32, "--no-early-stopping", "--device", "cpu")  # fmt: skip
    assert "out of memory during steps: text_encoder" in tuned.stderr
    record = json.loads((qt / "emu.json").read_text())
    assert record["options"]["prediction_type"] == "epsilon"
    assert record["stages_completed"] == ["denoiser"], "no super-resolution stage of its own"
    for component, name, moved in (("unet", "diffusion_pytorch_model", True),
                                   ("text_encoder", "model", False)):  # fmt: skip
        before, after = (load_file(f / component / f"{name}.safetensors") for f in (parent, qt))
        assert any(not torch.equal(before[k], after[k]) for k in before) == moved, component
    pipe = IFPipeline.from_pretrained(qt, requires_safety_checker=False)
    drawn = pipe("a red star", num_inference_steps=2, output_type="np", clean_caption=False,
                 generator=torch.Generator().manual_seed(0)).images  # fmt: skip
    assert drawn.shape == (1, 32, 32, 3) and np.isfinite(drawn).all()
    card = evaluate_push_and_load(qt, parent, "me/if-qt", tmp_path)
    assert 'IFPipeline.from_pretrained("me/if-qt"' in card
