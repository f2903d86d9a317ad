import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import emu, invoke, pretrain_tiny, train_stage


def test_pretrain_leaves_a_complete_run_folder(tiny_latent):
    provenance = json.loads((tiny_latent / "emu.json").read_text())
    assert provenance["backend"] == "latent"
    assert provenance["stages_completed"] == ["autoencoder", "denoiser"]
    assert provenance["steps"] == {"autoencoder": 12, "denoiser": 12}
    assert len(provenance["data"]["fingerprint"]) == 16 and provenance["data"]["samples"] == 160
    assert provenance["recipes"]["denoiser"]["batch_size"] == 8
    assert provenance["options"]["latent_scale_calibrated"] is True
    for stage in ("autoencoder", "denoiser"):
        folder = tiny_latent / "stages" / stage
        assert (folder / "loss.png").is_file() and (folder / "summary.json").is_file()
        assert Image.open(folder / "previews" / "step-00000012.png").size[0] > 32
        records = [json.loads(line) for line in (folder / "log.jsonl").read_text().splitlines()]
        assert [r["step"] for r in records if "loss" in r] == list(range(1, 13))
    summary = json.loads((tiny_latent / "stages" / "autoencoder" / "summary.json").read_text())
    assert summary["metrics"]["psnr"] > 5  # held-out reconstructions, in dB
    assert not list(tiny_latent.rglob("*.bin")), "weights must be safetensors only"


def test_generate_writes_images_and_same_seed_gives_same_images(tiny_latent, tmp_path):
    args = [
        "generate",
        "--model",
        tiny_latent,
        "a red star on a sunset background",
        "a blue circle over sand",
        "-n",
        "2",
        "--sampling-steps",
        "4",
        "--seed",
        "7",
        "--device",
        "cpu",
    ]
    emu(*args, "--out", tmp_path / "a")
    # the second prompt from a prompt file (--prompts), after the one given: the same images
    listed = tmp_path / "prompts.txt"
    listed.write_text("a blue circle over sand\n")
    without = [a for a in args if a != "a blue circle over sand"]
    emu(*without, "--prompts", listed, "--out", tmp_path / "b")
    files = sorted(p.name for p in (tmp_path / "a").glob("0*.png"))
    assert files == ["000-00.png", "000-01.png", "001-00.png", "001-01.png"]
    for name in files:
        a = np.asarray(Image.open(tmp_path / "a" / name))
        b = np.asarray(Image.open(tmp_path / "b" / name))
        assert a.shape == (32, 32, 3) and np.array_equal(a, b)
    different = np.asarray(Image.open(tmp_path / "a" / "000-01.png"))
    assert not np.array_equal(np.asarray(Image.open(tmp_path / "a" / "000-00.png")), different)
    index = json.loads((tmp_path / "a" / "index.json").read_text())
    assert [i["seed"] for i in index["images"]] == [7, 8, 7, 8]
    width, height = Image.open(tmp_path / "a" / "grid.png").size
    assert width == 2 * 256 + 3 * 6 and height > width, "256 px tiles, a caption under each"


def test_checkpoint_opens_in_stable_diffusion_pipeline(tiny_latent):
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline.from_pretrained(tiny_latent)
    assert pipe.vae.config.latent_channels == 16
    result = pipe(
        "a green heart on a snow background",
        num_inference_steps=3,
        height=32,
        width=32,
        generator=torch.Generator().manual_seed(0),
        output_type="np",
    )
    assert result.images.shape == (1, 32, 32, 3)
    assert np.isfinite(result.images).all()


def test_a_folder_without_emu_json_is_adopted_and_errors_name_the_folder_and_the_problem(
    tiny_latent, tmp_path
):
    from emu_cli.checkpoint.folder import CheckpointError, load_checkpoint, locate_checkpoint

    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "nothing")
    # a folder is recorded under one name however it was typed (runs reuse work by that name)
    assert locate_checkpoint(f"{tiny_latent}/").name == str(tiny_latent)
    foreign = tmp_path / "foreign"
    shutil.copytree(tiny_latent, foreign, ignore=shutil.ignore_patterns("emu.json", "stages"))
    # Without emu.json, a StableDiffusionPipeline folder is adopted: its Fourier lift is read
    # off the autoencoder's input channels.
    provenance = load_checkpoint(foreign)[2]
    recorded = json.loads((tiny_latent / "emu.json").read_text())["options"]
    assert provenance.adopted == "StableDiffusionPipeline"
    assert provenance.options["fourier_frequencies"] == recorded["fourier_frequencies"] > 0
    for index in ("{}", "not json"):  # a hand-made folder: no class named, or not JSON at all
        (foreign / "model_index.json").write_text(index)
        with pytest.raises(CheckpointError, match="no installed backend adopts a pipeline"):
            load_checkpoint(foreign)
    pickled = tmp_path / "pickled"
    shutil.copytree(tiny_latent, pickled, ignore=shutil.ignore_patterns("stages"))
    (pickled / "unet" / "diffusion_pytorch_model.bin").write_bytes(b"\x80\x04")
    with pytest.raises(CheckpointError, match="pickled weights"):
        load_checkpoint(pickled)
    result = emu("generate", "--model", foreign, "x", check=False)
    assert result.returncode == 1 and "pipeline folder without emu.json" in result.stderr


@pytest.fixture(scope="module")
def stable_diffusion(tmp_path_factory):
    """A Stable Diffusion folder made with diffusers alone, as a model trained elsewhere is."""
    from emu_latent_diffusion.foreign import save_tiny_stable_diffusion

    return save_tiny_stable_diffusion(tmp_path_factory.mktemp("elsewhere") / "sd")


def test_a_stable_diffusion_model_made_elsewhere_is_generated_from_and_quality_tuned(
    stable_diffusion, world, tmp_path
):
    """Adopted as it is (epsilon objective, no SNR weighting, text encoder frozen): generated
    from at its own size, quality-tuned into an emu checkpoint whose UNet moved and whose
    autoencoder and text encoder did not; from the Hub, only what the pipeline loads comes
    down (no pickles, no half-precision copies, no single-file checkpoint)."""
    from hub_server import WRITE_TOKEN, FakeHub
    from safetensors.torch import load_file

    from emu_cli.checkpoint.folder import load_checkpoint

    emu("generate", "--model", stable_diffusion, "a red star on a sunset background", "-n", 1,
        "--sampling-steps", 2, "--device", "cpu", "--out", tmp_path / "gen")  # fmt: skip
    assert Image.open(tmp_path / "gen" / "000-00.png").size == (32, 32)  # 16 latents x 2
    qt = tmp_path / "qt"
    emu("quality-tune", "--model", stable_diffusion, "--data", world, "--out", qt,
        "--steps", 2, "--no-early-stopping", "--device", "cpu")  # fmt: skip
    record = json.loads((qt / "emu.json").read_text())
    assert record["parent"] == str(stable_diffusion) and record["preset"] == "tiny"
    assert record["recipes"]["quality-tune"]["resolution"] == 32
    options = record["options"]
    assert (options["prediction_type"], options["snr_weighting"]) == ("epsilon", "none")
    assert options["fourier_frequencies"] == 0 and options["train_text_encoder"] is False
    for component, moved in (("unet", True), ("vae", False), ("text_encoder", False)):
        name = "model" if component == "text_encoder" else "diffusion_pytorch_model"
        before, after = (load_file(folder / component / f"{name}.safetensors")
                         for folder in (stable_diffusion, qt))  # fmt: skip
        changed = any(not torch.equal(before[k], after[k]) for k in before)
        assert changed == moved, component
    assert load_checkpoint(qt)[0].name == "latent", "the tuned model is an emu checkpoint"
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a red star on a sunset background\n")
    emu("evaluate", "--a", qt, "--b", stable_diffusion, "--prompts", prompts, "--out",
        tmp_path / "eval", "--sampling-steps", 2, "--device", "cpu", "--resamples", 10,
        "--judge", "none")  # fmt: skip
    results = json.loads((tmp_path / "eval" / "results.json").read_text())
    assert results["b"] == str(stable_diffusion) and results["pairs"] == 1

    repo = tmp_path / "repo"  # the Hub repo as Stable Diffusion's are laid out
    shutil.copytree(stable_diffusion, repo)
    (repo / "safety_checker").mkdir()
    (repo / "safety_checker" / "pytorch_model.bin").write_bytes(b"\x80\x04")
    (repo / "sd-v1.ckpt").write_bytes(b"\x80\x04")
    (repo / "sd-v1.safetensors").write_bytes(b"single-file checkpoint")
    shutil.copy(repo / "unet" / "diffusion_pytorch_model.safetensors",
                repo / "unet" / "diffusion_pytorch_model.fp16.safetensors")  # fmt: skip
    with FakeHub() as hub:
        env = {"HF_ENDPOINT": hub.endpoint, "HF_HUB_OFFLINE": "0", "HF_TOKEN": WRITE_TOKEN,
               "HF_HUB_DISABLE_TELEMETRY": "1", "HF_HOME": str(tmp_path / "hf-home")}  # fmt: skip
        upload = ("from huggingface_hub import HfApi; import sys; api = HfApi(); "
                  "api.create_repo('elsewhere/sd'); "
                  "api.upload_folder(repo_id='elsewhere/sd', folder_path=sys.argv[1])")  # fmt: skip
        subprocess.run([sys.executable, "-c", upload, repo], env={**os.environ, **env},
                       check=True, capture_output=True)  # fmt: skip
        emu("generate", "--model", "elsewhere/sd", "a red star on a sunset background", "-n", 1,
            "--sampling-steps", 2, "--device", "cpu", "--out", tmp_path / "hub",
            env=env)  # fmt: skip
        downloads = [path for method, path in hub.requests if method == "GET"]
    fetched = {path.split("/resolve/", 1)[1].split("/", 1)[1] for path in downloads
               if "/resolve/" in path}  # fmt: skip
    assert (tmp_path / "hub" / "000-00.png").read_bytes() == (
        tmp_path / "gen" / "000-00.png"
    ).read_bytes()
    assert "unet/diffusion_pytorch_model.safetensors" in fetched
    left = {"safety_checker/pytorch_model.bin", "sd-v1.ckpt", "sd-v1.safetensors",
            "unet/diffusion_pytorch_model.fp16.safetensors"}  # fmt: skip
    assert not fetched & left, fetched & left


def test_existing_run_is_not_overwritten_without_resume(tiny_latent, world):
    result = pretrain_tiny(world, tiny_latent, check=False)
    assert result.returncode == 1 and "--resume latest" in result.stderr


def test_autoencoder_fourier_lift_and_adversarial_loss_train(world, tmp_path):
    """The Emu autoencoder options: 8 channels, Fourier lift, adversarial term in one step."""
    from emu_cli.plugin.registry import get_backend

    backend = get_backend("latent")
    model = backend.build(
        "tiny", {"adversarial_weight": 0.1, "fourier_frequencies": 3, "vae": {"latent_channels": 8}}
    )
    assert model["vae"].config.in_channels == 3 + 6 * 3
    before = [p.detach().clone() for p in model["discriminator"].parameters()]
    result = train_stage(
        backend,
        model,
        "autoencoder",
        world,
        tmp_path,
        steps=3,
        batch_size=4,
        warmup_steps=1,
        ema_decay=0,
        resolution=32,
        checkpoint_every=100,
        preview_every=3,
    )
    assert "psnr" in result.metrics
    changed = [
        not torch.equal(a, b)
        for a, b in zip(before, model["discriminator"].parameters(), strict=True)
    ]
    assert all(changed), "the discriminator is trained by the same optimizer step"
    logged = json.loads((tmp_path / "log.jsonl").read_text().splitlines()[0])
    assert {"discriminator", "adversarial", "reconstruction", "kl"} <= set(logged)
    backend.save(model, tmp_path / "saved")
    reloaded = backend.load(tmp_path / "saved")
    assert torch.equal(
        next(reloaded["discriminator"].parameters()), next(model["discriminator"].parameters())
    )


def test_pretrained_text_encoder_by_path_is_used_frozen(tiny_latent, world, tmp_path):
    """--text-encoder takes a local folder (or a hub name where one is cached) and keeps it."""
    out = tmp_path / "with-clip"
    pretrain_tiny(world, out, "--steps", 2, "--batch-size", 4, "--text-encoder", tiny_latent)
    provenance = json.loads((out / "emu.json").read_text())
    assert provenance["options"]["train_text_encoder"] is False
    from safetensors.torch import load_file

    given = load_file(tiny_latent / "text_encoder" / "model.safetensors")
    kept = load_file(out / "text_encoder" / "model.safetensors")
    assert all(torch.equal(given[k], kept[k]) for k in given)


@pytest.mark.slow
def test_a_model_generates_at_the_resolution_it_was_trained_at(world, tmp_path):
    """The tiny preset is 32 px; trained at 16 px, it must also generate at 16 px (at the
    preset's size it would decode latents it never learned)."""
    config = tmp_path / "run.yaml"
    config.write_text("resolution: 16\n")
    out = tmp_path / "small-images"
    pretrain_tiny(world, out, "--steps", 2, "--batch-size", 4, "--config", config)
    emu("generate", "--model", out, "a red star", "-n", 1, "--sampling-steps", 2,
        "--out", tmp_path / "g", "--device", "cpu")  # fmt: skip
    assert Image.open(tmp_path / "g" / "000-00.png").size == (16, 16)
    unet = json.loads((out / "unet" / "config.json").read_text())
    vae = json.loads((out / "vae" / "config.json").read_text())
    assert unet["sample_size"] * 2 ** (len(vae["block_out_channels"]) - 1) == 16


@pytest.mark.parametrize("backend_name", ["latent", "pixel"])
def test_diffusion_backends_learn_the_whole_picture_from_the_text(backend_name):
    """The last training timestep leaves no signal, so a sample's overall color comes from the
    prompt, not from the starting noise; and the pooled text reaches the timestep embedding."""
    from emu_cli.plugin.registry import get_backend

    model = get_backend(backend_name).build("tiny", {})
    scheduler, unet = model["scheduler"], model["unet"]
    assert scheduler.config.prediction_type == "v_prediction"
    assert float(scheduler.alphas_cumprod[-1]) < 1e-6
    ids = model["tokenizer"](["a red star", "a blue ring on snow"], padding="max_length",
                             max_length=model["tokenizer"].model_max_length,
                             return_tensors="pt").input_ids  # fmt: skip
    states = model["text_encoder"](ids)[0]
    pooled = unet.add_embedding(states)
    assert pooled.shape == (2, unet.time_embedding.linear_2.out_features)
    assert not torch.allclose(pooled[0], pooled[1])


def test_an_adopted_model_is_judged_only_by_a_judge_named(
    stable_diffusion, world, judge_weights, tmp_path
):
    """No judge of coloured shapes for a real model: without --judge, quality-tuning with
    early stopping and evaluation stop before any work, naming the judges installed."""
    qt = tmp_path / "qt"
    tune = ("quality-tune", "--model", stable_diffusion, "--data", world, "--out", qt,
            "--steps", 2, "--device", "cpu")  # fmt: skip
    refused = invoke(*tune)
    assert refused.exit_code == 1
    assert "needs --judge for a model not trained on the built-in world" in refused.output
    assert (
        "Installed judges: clip-aesthetic, clipscore, hpsv2, imagereward, pickscore, vqascore, "
        "world" in refused.output
    )
    assert not qt.exists(), "refused before any work"
    judged = (*tune, "--judge", f"clip-aesthetic@{judge_weights.clip}", "--validate-every", 1,
              "--validation-sampling-steps", 2)  # fmt: skip
    refused = invoke(*judged)
    assert refused.exit_code == 1 and "needs --validation-prompts" in refused.output
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a red star on a sunset background\n")
    ran = invoke(*judged, "--validation-prompts", prompts)
    assert ran.exit_code == 0, ran.output
    curve = json.loads((qt / "stages" / "quality-tune" / "curve.json").read_text())
    assert curve["judge"] == f"clip-aesthetic@{judge_weights.clip}" and len(curve["points"]) == 3

    out = tmp_path / "eval"
    refused = invoke("evaluate", "--a", qt, "--b", stable_diffusion, "--prompts", prompts,
                     "--out", out, "--device", "cpu")  # fmt: skip
    assert refused.exit_code == 1 and "emu evaluate needs --judge" in refused.output
    assert not (out / "images").exists(), "refused before generating"


def test_flow_matching_moves_on_a_straight_line_and_predicts_its_velocity():
    """Rectified flow in the shared math: a denoiser that knows the clean sample answers
    exactly (loss 0), with or without a noise offset, only if the sample lies at
    (1 - sigma) * clean + sigma * noise with sigma = timestep / 1000 and the target is
    noise - clean; sigma is logit-normal, so the path's ends get few steps."""
    from diffusers import DPMSolverMultistepScheduler, FlowMatchEulerDiscreteScheduler

    from emu_cli.errors import EmuError
    from emu_cli.kit.diffusion import (
        FLOW,
        check_objective,
        diffusion_loss,
        flow_shift,
        scheduler_config,
    )

    scheduler = DPMSolverMultistepScheduler(**scheduler_config(FLOW))
    clean = torch.full((4096, 4, 4, 4), 0.7)
    seen = []

    def knowing(noisy, timesteps):
        seen.append(timesteps / 1000)
        return (noisy - clean) / (timesteps / 1000).view(-1, 1, 1, 1)

    for offset in (0.0, 0.1):
        generator = torch.Generator().manual_seed(0)
        loss = diffusion_loss(knowing, clean, scheduler, generator, noise_offset=offset)["loss"]
        assert loss.item() < 1e-8
    sigmas = seen[0]
    assert 0.48 < sigmas.median().item() < 0.52
    assert ((sigmas < 0.05) | (sigmas > 0.95)).float().mean().item() < 0.02  # uniform: 0.1
    blind = diffusion_loss(lambda noisy, t: torch.zeros_like(noisy), clean, scheduler,
                           torch.Generator().manual_seed(1))["loss"]  # fmt: skip
    assert blind.item() == pytest.approx(1 + 0.7**2, rel=0.02)  # E[(noise - clean)^2]
    with pytest.raises(EmuError, match="takes no SNR weighting"):
        check_objective(FLOW, "soft-min", 5.0)
    # SD3's sampler shifts its sigmas by 3 (3s / (1 + 2s)): trained on the same ones, the
    # median sigma is 0.75, not 0.5
    seen.clear()
    shifted = FlowMatchEulerDiscreteScheduler(shift=3.0)
    loss = diffusion_loss(knowing, clean, shifted, torch.Generator().manual_seed(0))["loss"]
    assert loss.item() < 1e-8 and 0.73 < seen[0].median().item() < 0.77
    # Flux shifts by the image's size when it samples, and trains unshifted
    by_size = FlowMatchEulerDiscreteScheduler(shift=3.0, use_dynamic_shifting=True)
    assert flow_shift(by_size) == 1.0 and flow_shift(shifted) == 3.0
    assert flow_shift(DPMSolverMultistepScheduler(**scheduler_config("epsilon"))) is None


def test_a_flow_model_trains_generates_and_opens_in_stable_diffusion_pipeline(world, tmp_path):
    from diffusers import StableDiffusionPipeline

    config = tmp_path / "run.yaml"
    config.write_text("resolution: 16\n")
    out = tmp_path / "flow"
    pretrain_tiny(world, out, "--steps", 2, "--batch-size", 4, "--config", config,
                  "--option", "prediction_type=flow_prediction")  # fmt: skip
    options = json.loads((out / "emu.json").read_text())["options"]
    assert options["prediction_type"] == "flow_prediction" and options["snr_weighting"] == "none"
    schedule = json.loads((out / "scheduler" / "scheduler_config.json").read_text())
    assert schedule["use_flow_sigmas"] and schedule["prediction_type"] == "flow_prediction"
    tuned = tmp_path / "tuned"
    emu("quality-tune", "--model", out, "--data", world, "--out", tuned, "--steps", 2,
        "--batch-size", 4, "--no-early-stopping", "--device", "cpu")  # fmt: skip
    emu("generate", "--model", tuned, "a red star", "-n", 1, "--sampling-steps", 3,
        "--out", tmp_path / "g", "--device", "cpu")  # fmt: skip
    assert Image.open(tmp_path / "g" / "000-00.png").size == (16, 16)
    pipe = StableDiffusionPipeline.from_pretrained(tuned)
    images = pipe("a red star", num_inference_steps=3, height=16, width=16,
                  generator=torch.Generator().manual_seed(0), output_type="np").images  # fmt: skip
    assert images.shape == (1, 16, 16, 3) and np.isfinite(images).all()
