"""The masked-generative-transformer backend plugin: tokenizer, masking, sampling, checkpoints."""

import json
import math

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import emu


@pytest.fixture(scope="session")
def tiny_masked(tmp_path_factory, world):
    """A tiny masked model (VQ tokenizer, then transformer) pre-trained through the real CLI."""
    out = tmp_path_factory.mktemp("runs") / "masked"
    emu(
        "pretrain", "--backend", "masked", "--preset", "tiny", "--data", world, "--out", out,
        "--device", "cpu", "--steps", 8, "--batch-size", 8, "--preview-every", 4,
    )  # fmt: skip
    return out


def test_listed_as_a_plugin_of_its_own():
    listed = json.loads(emu("backends", "--json").stdout)
    masked = [p for p in listed["plugins"] if p["name"] == "masked"]
    assert masked and masked[0]["distribution"] == "emu-masked-transformer"
    assert masked[0]["backends"] == ["masked"]


@pytest.mark.slow
def test_pretrain_generate_reload_gives_the_same_images(tiny_masked, tmp_path):
    provenance = json.loads((tiny_masked / "emu.json").read_text())
    assert provenance["stages_completed"] == ["tokenizer", "transformer"]
    tokenizer_summary = json.loads((tiny_masked / "stages/tokenizer/summary.json").read_text())
    assert {"psnr", "codebook_usage"} <= set(tokenizer_summary["metrics"])
    assert 0 < tokenizer_summary["metrics"]["codebook_usage"] <= 1

    prompt = "a red star on a sunset background"
    runs = []
    for name in ("first", "second"):
        emu("generate", "--model", tiny_masked, prompt, "-n", 2, "--sampling-steps", 4, "--seed", 5,
            "--out", tmp_path / name, "--device", "cpu")  # fmt: skip
        runs.append([np.asarray(Image.open(tmp_path / name / f"000-0{i}.png")) for i in (0, 1)])
    # Asked for no guidance scale, the model samples at its backend's own.
    from emu_masked_transformer.backend import MaskedTransformer

    default = MaskedTransformer.default_guidance
    assert json.loads((tmp_path / "first" / "index.json").read_text())["guidance"] == default
    assert runs[0][0].shape == (16, 16, 3)
    assert all(np.array_equal(a, b) for a, b in zip(runs[0], runs[1], strict=True))
    assert not np.array_equal(runs[0][0], runs[0][1]), "different seeds, different images"

    # The checkpoint is an AmusedPipeline folder: diffusers opens it (emu_masked_transformer.uvit
    # imported, for the transformer's class) and draws the image emu draws for that seed (one
    # image each: a batch's arithmetic can move a last bit).
    from diffusers import AmusedPipeline

    from emu_cli.checkpoint.folder import load_checkpoint

    backend, model, _ = load_checkpoint(tiny_masked)
    cpu = torch.device("cpu")
    ours = backend.sample(model, [prompt], steps=4, guidance=default, seeds=[5], device=cpu)[0]
    pipe = AmusedPipeline.from_pretrained(tiny_masked)
    image = pipe(
        prompt,
        num_inference_steps=4,
        guidance_scale=default,
        generator=torch.Generator().manual_seed(5),
    ).images[0]
    assert np.array_equal(np.asarray(image), np.asarray(ours))


def test_an_amused_folder_made_elsewhere_is_adopted(tiny_masked, world, tmp_path):
    """An AmusedPipeline folder without emu.json (as amused/amused-256 is) draws what the same
    weights draw as an emu checkpoint, at the size AmusedPipeline computes, and quality-tunes
    with its text encoder frozen."""
    import shutil

    from safetensors.torch import load_file

    from emu_cli.checkpoint.folder import load_checkpoint

    elsewhere = tmp_path / "amused"
    shutil.copytree(tiny_masked, elsewhere, ignore=shutil.ignore_patterns("emu.json", "stages"))
    backend, model, provenance = load_checkpoint(elsewhere)
    assert provenance.adopted == "AmusedPipeline" and provenance.preset == "tiny"
    assert provenance.recipes == {"transformer": {"resolution": 16}}
    _, original, _ = load_checkpoint(tiny_masked)
    cpu, prompt = torch.device("cpu"), ["a red star on a sunset background"]
    drawn = [backend.sample(m, prompt, steps=4, guidance=2.0, seeds=[3], device=cpu)[0]
             for m in (model, original)]  # fmt: skip
    assert np.array_equal(*map(np.asarray, drawn))

    qt = tmp_path / "qt"
    emu("quality-tune", "--model", elsewhere, "--data", world, "--out", qt, "--device", "cpu",
        "--steps", 2, "--no-early-stopping")  # fmt: skip
    assert json.loads((qt / "emu.json").read_text())["parent"] == str(elsewhere)
    for component, name, moved in (("transformer", "diffusion_pytorch_model", True),
                                   ("text_encoder", "model", False)):  # fmt: skip
        before, after = (load_file(f / component / f"{name}.safetensors") for f in (elsewhere, qt))
        assert any(not torch.equal(before[k], after[k]) for k in before) == moved, component


@pytest.mark.slow
def test_quality_tuning_uses_the_backends_learning_rate_scale_and_bf16(
    tiny_masked, world, tmp_path
):
    from emu_masked_transformer.backend import MaskedTransformer
    from safetensors.torch import load_file

    from emu_cli.training.resolution import QT_PRESETS

    emu("quality-tune", "--model", tiny_masked, "--data", world, "--out", tmp_path / "qt",
        "--device", "cpu", "--steps", 2, "--no-early-stopping",
        "--mixed-precision", "bf16")  # fmt: skip
    recipe = json.loads((tmp_path / "qt" / "emu.json").read_text())["recipes"]["quality-tune"]
    scale = MaskedTransformer.quality_tune_lr_scale
    assert scale != 1.0
    assert recipe["learning_rate"] == pytest.approx(
        QT_PRESETS["tiny"].recipe["learning_rate"] * scale
    )
    assert recipe["mixed_precision"] == "bf16"
    assert recipe["noise_offset"] == 0.0, "a masked model has no Gaussian noise to offset"
    weights = tmp_path / "qt" / "transformer" / "diffusion_pytorch_model.safetensors"
    assert {t.dtype for t in load_file(weights).values()} == {torch.float32}, (
        "autocast trains in bf16 but keeps and saves float32 weights"
    )


def test_dead_codes_are_restarted_onto_the_data():
    from emu_masked_transformer.tokenizer import TokenizerTraining, nearest_codes

    from emu_cli.plugin.registry import get_backend

    model = get_backend("masked").build("tiny", {})
    vq = model["vqvae"]
    with torch.no_grad():  # every code far from any encoder output: all but one are dead
        vq.quantize.embedding.weight.fill_(50.0)
        vq.quantize.embedding.weight[0] = 0.0
    images = torch.rand(8, 3, 16, 16) * 2 - 1
    training = TokenizerTraining(vq)
    first = training({"pixels": images, "generator": torch.Generator().manual_seed(0)})
    assert first["codebook_usage"].item() == pytest.approx(1 / 64)
    assert torch.isfinite(first["loss"])
    with torch.no_grad():
        latents = vq.encode((images + 1) / 2).latents
        used = nearest_codes(vq, latents).unique().numel()
    assert used > 16, f"restarted codes should now be chosen, only {used} of 64 are"


def test_the_nearest_code_search_stays_float32_under_bf16_autocast():
    from emu_masked_transformer.tokenizer import TokenizerTraining

    from emu_cli.plugin.registry import get_backend

    vq = get_backend("masked").build("tiny", {})["vqvae"]
    seen = []
    vq.quantize.register_forward_hook(lambda _m, inputs, _out: seen.append(inputs[0].dtype))
    images = torch.rand(4, 3, 16, 16) * 2 - 1
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert vq.encode(images).latents.dtype == torch.bfloat16  # the convolutions are bf16
        outputs = TokenizerTraining(vq)(
            {"pixels": images, "generator": torch.Generator().manual_seed(0)}
        )
    assert seen == [torch.float32]
    assert torch.isfinite(outputs["loss"])


def _logits_with_every_token_masked(model) -> torch.Tensor:
    """(rows, columns, codebook): what the model's transformer predicts at each position of an
    all-masked grid, the first step of decoding."""
    from emu_masked_transformer.transformer import micro_conditions, text_conditions

    from emu_cli.kit.text import token_ids

    cpu = torch.device("cpu")
    pooled, states = text_conditions(
        model["text_encoder"], token_ids(model["tokenizer"], ["a red star"], cpu)
    )
    side = model["transformer"].config.sample_size
    grid = torch.full((1, side, side), model["scheduler"].config.mask_token_id)
    conditions = micro_conditions(1, model["vqvae"].config.sample_size, cpu)
    with torch.no_grad():
        logits = model["transformer"](grid, micro_conds=conditions, pooled_text_emb=pooled,
                                      encoder_hidden_states=states)  # fmt: skip
    return logits[0].permute(1, 2, 0)


def test_the_transformer_knows_where_each_masked_token_is(tmp_path):
    """UVit2D has no position embedding: with every token masked it predicts the same away from
    the grid's edge, so a captioned subject has no place to go. The sine table makes every
    position's prediction its own, survives a checkpoint, and holds no weights: a folder naming
    diffusers' own UVit2DModel (aMUSEd's) loads the same state dict and draws as it was trained."""
    import shutil

    from diffusers import UVit2DModel
    from emu_masked_transformer.uvit import PositionalUVit2DModel

    from emu_cli.plugin.registry import get_backend

    backend = get_backend("masked")
    backend.save(backend.build("tiny", {}), tmp_path / "ours")
    index = json.loads((tmp_path / "ours" / "model_index.json").read_text())
    assert index["transformer"] == ["emu_masked_transformer.uvit", "PositionalUVit2DModel"]
    ours = backend.load(tmp_path / "ours")
    assert type(ours["transformer"]) is PositionalUVit2DModel
    positions = _logits_with_every_token_masked(ours).flatten(0, 1)
    assert len(positions.unique(dim=0)) == len(positions) == 64

    stock = tmp_path / "stock"
    shutil.copytree(tmp_path / "ours", stock)
    renamed = {"model_index.json": ("transformer", ["diffusers", "UVit2DModel"]),
               "transformer/config.json": ("_class_name", "UVit2DModel")}  # fmt: skip
    for name, (key, value) in renamed.items():
        config = json.loads((stock / name).read_text())
        (stock / name).write_text(json.dumps({**config, key: value}))
    theirs = backend.load(stock)
    assert type(theirs["transformer"]) is UVit2DModel
    weights = theirs["transformer"].state_dict()
    assert all(torch.equal(weights[k], v) for k, v in ours["transformer"].state_dict().items())
    plain = _logits_with_every_token_masked(theirs)
    inner = plain[2:6, 2:6].flatten(0, 1)  # beyond the convolutions' reach of the edge
    assert torch.allclose(inner, inner[:1].expand_as(inner), atol=1e-5)
    assert not torch.allclose(plain[0, 0], plain[3, 3], atol=1e-5)


def test_cosine_masking_schedule():
    from emu_masked_transformer.transformer import cosine_mask

    mask = cosine_mask(4000, 64, torch.Generator().manual_seed(0), torch.device("cpu"))
    assert mask.sum(dim=1).min() >= 1, "every image has something to predict"
    # E[cos(pi/2 u)] = 2/pi for u ~ U(0, 1); ceil adds up to one token in 64.
    assert mask.float().mean().item() == pytest.approx(2 / math.pi, abs=0.02)
    again = cosine_mask(4000, 64, torch.Generator().manual_seed(0), torch.device("cpu"))
    assert torch.equal(mask, again)


def test_unknown_options_are_named():
    from emu_cli.plugin.registry import get_backend

    with pytest.raises(ValueError, match="no option temperature"):
        get_backend("masked").build("tiny", {"temperature": 2})


def test_asking_a_masked_model_for_a_noise_offset_is_an_error(world, tmp_path):
    result = emu("pretrain", "--backend", "masked", "--preset", "tiny", "--data", world,
                 "--out", tmp_path / "run", "--noise-offset", "0.1", check=False)  # fmt: skip
    assert result.returncode != 0
    assert "backend 'masked' adds no Gaussian noise" in result.stderr
    assert "noise_offset=0.1" in result.stderr
    assert not (tmp_path / "run" / "emu.json").exists()
