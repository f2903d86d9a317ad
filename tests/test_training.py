"""The shared trainer's promises: exact resume after SIGKILL, data parallelism, schedules."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from conftest import emu, invoke, kill_after, train_stage

# Per backend: its first stage short, the last one long enough to be killed in the middle.
RUN_CONFIGS = {
    "latent": ("autoencoder", "denoiser"),
    "masked": ("tokenizer", "transformer"),
    "pixel": ("denoiser", "superres"),
}


def _run_config(first: str, last: str, noise_offset: bool) -> str:
    # the offset's random draws must resume too, where the backend has one
    offset = ", noise_offset: 0.05" if noise_offset else ""
    return f"""
stages_recipe:
  {first}: {{steps: 4, checkpoint_every: 100}}
  {last}: {{steps: 12, checkpoint_every: 4, warmup_steps: 3{offset}}}
"""


def _weights(run: Path) -> dict[str, torch.Tensor]:
    tensors = {}
    for file in sorted(run.glob("*/*.safetensors")):
        tensors |= {f"{file.parent.name}.{k}": v for k, v in load_file(file).items()}
    return tensors


def _pretrain_args(world: Path, out: Path, config: Path, backend: str = "latent") -> list[str]:
    return [
        "pretrain",
        "--backend",
        backend,
        "--preset",
        "tiny",
        "--data",
        str(world),
        "--out",
        str(out),
        "--batch-size",
        "8",
        "--config",
        str(config),
        "--device",
        "cpu",
        "--preview-every",
        "0",
        # the generating stage's judged curve must survive the crash too
        "--validate-every",
        "4",
        "--validation-sampling-steps",
        "2",
        # two optimizer groups (the text encoder's at half the rate) must resume, each its own
        "--option",
        "text_encoder_lr_scale=0.5",
        # latent resumes under flow matching, pixel under v-prediction: both objectives' draws
        *(("--option", "prediction_type=flow_prediction") if backend == "latent" else ()),
    ]


@pytest.mark.slow
@pytest.mark.parametrize("backend", sorted(RUN_CONFIGS))
def test_killed_run_resumes_to_the_same_weights(world, tmp_path, backend):
    from emu_cli.plugin.registry import get_backend

    first, last = RUN_CONFIGS[backend]
    config = tmp_path / "run.yaml"
    config.write_text(_run_config(first, last, get_backend(backend).uses_noise_offset))
    emu(*_pretrain_args(world, tmp_path / "straight", config, backend))

    killed = tmp_path / "killed"
    kill_after(
        _pretrain_args(world, killed, config, backend),
        killed / "stages" / last / "checkpoints" / "latest",
    )
    assert not (killed / "stages" / last / "summary.json").exists()

    # a resumed stage continues the run it started: other settings are refused, not mixed in
    option = "label_smoothing=0.2" if backend == "masked" else "snr_gamma=1"
    key = option.split("=")[0]
    for extra, change in (
        (("--lr", "0.5"), "learning_rate 0.001 -> 0.5"),
        (("--option", option), f"{key} "),
        (("--preset", "small"), "preset 'tiny' -> 'small'"),
    ):
        args = _pretrain_args(world, killed, config, backend)
        refused = invoke(*args, "--resume", "latest", *extra)
        assert refused.exit_code == 1, refused.output
        assert "was trained with other settings (" in refused.output and change in refused.output

    resumed = emu(*_pretrain_args(world, killed, config, backend), "--resume", "latest")
    assert f"stage '{first}' already completed" in resumed.stderr
    assert f"resuming stage '{last}' from" in resumed.stderr
    straight, again = _weights(tmp_path / "straight"), _weights(killed)
    assert straight and straight.keys() == again.keys()
    worst = max((straight[k] - again[k]).abs().max().item() for k in straight)
    assert worst < 1e-6, f"resumed weights differ by {worst}"
    log = [
        json.loads(line) for line in (killed / f"stages/{last}/log.jsonl").read_text().splitlines()
    ]
    assert [r["step"] for r in log if "loss" in r] == list(range(1, 13)), "no step logged twice"
    checkpoints = sorted((killed / "stages" / last / "checkpoints").glob("step-*"))
    state = json.loads((checkpoints[-1] / "state.json").read_text())
    assert state["scheduler"]["base_lrs"] == pytest.approx([1e-3, 5e-4]), "the encoder's own rate"

    generator = get_backend(backend).generator_stage()
    steps = 12 if generator == last else 4
    records = [
        json.loads((run / "stages" / generator / "curve.json").read_text())
        for run in (tmp_path / "straight", killed)
    ]
    assert records[1]["guidance"] == get_backend(backend).default_guidance
    curves = [record["points"] for record in records]
    assert [p["step"] for p in curves[1]] == list(range(0, steps + 1, 4)), "one reading a step"
    for score in ("appeal", "faithfulness"):  # the resumed run reads as the straight one
        readings = [[p[score] for p in curve] for curve in curves]
        assert readings[1] == pytest.approx(readings[0], abs=1e-4), score
    assert not (killed / "stages" / generator / "best").exists(), "pre-training picks no step"


def test_resume_from_a_named_checkpoint_takes_only_one_of_the_stage_to_train(world, tmp_path):
    out = tmp_path / "run"
    args = ["pretrain", "--backend", "latent", "--preset", "tiny", "--data", world, "--out", out,
            "--device", "cpu", "--steps", 4, "--batch-size", 4, "--checkpoint-every", 2,
            "--preview-every", 0]  # fmt: skip
    assert invoke(*args, "--stage", "autoencoder").exit_code == 0
    step = out / "stages" / "autoencoder" / "checkpoints" / "step-00000002"
    assert step.is_dir()
    # its optimizer state is the autoencoder's: loading it into the denoiser's optimizer
    # failed deep in torch (or, with groups of the same sizes, would not fail at all)
    refused = invoke(*args, "--stage", "denoiser", "--resume", step)
    assert refused.exit_code == 1
    assert "is a checkpoint of stage 'autoencoder', not of 'denoiser'" in refused.output
    refused = invoke(*args, "--stage", "denoiser", "--resume", tmp_path / "nothing")
    assert refused.exit_code == 1 and "is not a training checkpoint" in refused.output
    assert not (out / "stages" / "denoiser").exists()


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["latent", "masked"])  # masked: codebook broadcasts
def test_two_process_data_parallel_run_on_cpu(world, tmp_path, backend):
    out = tmp_path / "ddp"
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        "--master_port",
        str(29517 + sorted(RUN_CONFIGS).index(backend)),  # a port each: no TIME_WAIT clash
        "-m",
        "emu_cli",
        "pretrain",
        "--backend",
        backend,
        "--preset",
        "tiny",
        "--data",
        str(world),
        "--out",
        str(out),
        "--steps",
        "4",
        "--batch-size",
        "4",
        "--device",
        "cpu",
        "--checkpoint-every",
        "2",
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    last = RUN_CONFIGS[backend][1]
    summary = json.loads((out / "stages" / last / "summary.json").read_text())
    assert summary["processes"] == 2
    assert json.loads((out / "emu.json").read_text())["processes"] == 2
    # Every process trained a replica; they stay identical because gradients are averaged.
    records = [
        json.loads(line) for line in (out / "stages" / last / "log.jsonl").read_text().splitlines()
    ]
    assert [r["step"] for r in records if "loss" in r] == [1, 2, 3, 4], "only rank 0 logs"
    assert (out / "stages" / last / "checkpoints/step-00000002/state.safetensors").is_file()
    emu(
        "generate",
        "--model",
        out,
        "a red star",
        "-n",
        "1",
        "--sampling-steps",
        "2",
        "--out",
        tmp_path / "g",
        "--device",
        "cpu",
    )


def test_learning_rate_warms_up_then_follows_the_schedule():
    from emu_cli.training.recipe import Recipe
    from emu_cli.training.trainer import learning_rate_factor

    cosine = learning_rate_factor(Recipe(steps=110, warmup_steps=10))
    assert cosine(0) == pytest.approx(0.1) and cosine(9) == pytest.approx(1.0)
    assert cosine(60) == pytest.approx(0.5) and cosine(110) == pytest.approx(0.0, abs=1e-9)
    constant = learning_rate_factor(Recipe(steps=110, warmup_steps=10, lr_schedule="constant"))
    assert constant(100) == 1.0


@pytest.mark.parametrize("backend", sorted(RUN_CONFIGS))
def test_a_text_encoder_trained_from_scratch_learns_at_its_own_rate(backend):
    from emu_cli.plugin.registry import get_backend
    from emu_cli.training.recipe import Recipe
    from emu_cli.training.trainer import parameter_groups

    plugin = get_backend(backend)
    stage = plugin.generator_stage()
    model = plugin.build("tiny", {"text_encoder_lr_scale": 0.1})
    module = plugin.training_module(model, stage, Recipe())
    text = {id(p) for p in model["text_encoder"].parameters()}
    before = {id(p): p.detach().clone() for p in module.parameters() if p.requires_grad}
    assert text <= before.keys(), "built here, the text encoder trains"

    # One Adam step on a gradient of ones moves every weight by its group's rate.
    optimizer = torch.optim.AdamW(parameter_groups(module, 1e-3), weight_decay=0.0)
    for parameter in module.parameters():
        if parameter.requires_grad:
            parameter.grad = torch.ones_like(parameter)
    optimizer.step()
    for parameter in module.parameters():
        if parameter.requires_grad:
            moved = (before[id(parameter)] - parameter.detach()).abs().max().item()
            rate = 1e-4 if id(parameter) in text else 1e-3
            assert moved == pytest.approx(rate, rel=1e-3)

    for bad in (0, -1.0, "fast"):
        model.options["text_encoder_lr_scale"] = bad
        with pytest.raises(
            ValueError, match=f"text_encoder_lr_scale must be a number > 0, got {bad!r}"
        ):
            plugin.training_module(model, stage, Recipe())


def test_progressive_resolution_schedule_feeds_each_phase_its_resolution(world, tmp_path):
    from emu_cli.plugin.registry import get_backend
    from emu_cli.training.recipe import Recipe

    backend = get_backend("latent")
    model = backend.build("tiny", {})
    train_stage(
        backend,
        model,
        "autoencoder",
        world,
        tmp_path,
        steps=4,
        batch_size=2,
        resolution_schedule=[[16, 2], [32, 2]],
        warmup_steps=1,
        checkpoint_every=100,
        preview_every=100,
    )
    records = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert [r["resolution"] for r in records if "loss" in r] == [16, 16, 32, 32]
    assert all(r["step_seconds"] > 0 for r in records if "loss" in r)
    with pytest.raises(ValueError, match="has 3 steps but the recipe has steps=4"):
        Recipe(steps=4, resolution_schedule=[[16, 1], [32, 2]]).validate()


def test_ema_averages_and_swaps_back():
    from emu_cli.training.ema import EMA

    weight = torch.nn.Parameter(torch.zeros(3))
    ema = EMA([weight], decay=0.5)
    with torch.no_grad():
        weight.fill_(1.0)
    ema.update()  # warm-up decay min(0.5, 1/10) = 0.1
    assert torch.allclose(ema.shadow[0], torch.full((3,), 0.9))
    ema.swap_in()
    assert torch.allclose(weight, torch.full((3,), 0.9))
    ema.swap_out()
    assert torch.equal(weight.detach(), torch.ones(3))


def _attention_kernels(recipe, device: torch.device) -> set[str]:
    """The aten attention kernels one scaled_dot_product_attention call ran under the recipe."""
    import torch.nn.functional as F
    from torch.profiler import ProfilerActivity, profile

    query = torch.randn(2, 4, 64, 16)
    with (
        profile(activities=[ProfilerActivity.CPU]) as trace,
        recipe.attention_kernel(device),
        torch.autocast("cpu", dtype=torch.bfloat16),
    ):
        F.scaled_dot_product_attention(query, query, query)
    return {e.key for e in trace.key_averages() if "attention" in e.key and "flash" in e.key}


def test_the_recipe_runs_bf16_attention_on_a_cpu_with_the_math_kernel():
    from emu_cli.training.recipe import Recipe

    cpu = torch.device("cpu")
    # torch's own choice on a CPU is flash attention, whose backward is slow at these sizes
    assert _attention_kernels(Recipe(mixed_precision="bf16", attention="torch"), cpu)
    assert not _attention_kernels(Recipe(mixed_precision="bf16"), cpu)
    assert _attention_kernels(Recipe(mixed_precision="no"), cpu)
    assert not _attention_kernels(Recipe(attention="math"), cpu)
    with pytest.raises(ValueError, match="attention must be auto, torch or math, got 'fast'"):
        Recipe(attention="fast").validate()
