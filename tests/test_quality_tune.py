"""`emu quality-tune`: the paper's recipe as defaults, encodings computed once, early stopping."""

import json

import pytest
import torch

from conftest import emu, invoke, kill_after
from emu_cli.training.early_stopping import EarlyStopping


class Plain:
    """A backend's two attributes the quality-tuning recipe reads."""

    name = "plain"
    uses_noise_offset = True

    def __init__(self, lr_scale=1.0):
        self.quality_tune_lr_scale = lr_scale


def qt_recipe(preset, pretrained, command_line=None, config=None, lr_scale=1.0):
    from emu_cli.training.resolution import quality_tuning_recipe

    layers = [("config file", config or {}), ("command line", command_line or {})]
    return quality_tuning_recipe(Plain(lr_scale), preset, pretrained, layers)


def test_recipe_defaults_are_the_papers_scaled_by_preset():
    pretrained = {"resolution": 64, "resolution_schedule": [[32, 10], [128, 10]], "steps": 20}
    base = qt_recipe("base", pretrained).recipe
    assert base.batch_size == 64
    assert base.noise_offset == 0.1
    assert base.steps == 15_000  # the paper's cap
    assert base.lr_schedule == "constant" and base.learning_rate <= 1e-4
    assert base.ema_decay > 0
    assert base.resolution == 128, "tunes at the resolution pre-training ended at"
    assert base.resolution_schedule == []
    small, tiny = qt_recipe("small", {}).recipe, qt_recipe("tiny", {}).recipe
    assert tiny.steps < small.steps < base.steps
    assert small.batch_size == 64 and small.noise_offset == 0.1
    assert qt_recipe("small", {}, {"steps": 7, "noise_offset": 0.05}).recipe.steps == 7
    with pytest.raises(ValueError, match="unknown recipe fields: bogus"):
        qt_recipe("small", {}, {"bogus": 1})


def test_every_field_says_which_layer_it_came_from_and_the_command_line_wins():
    resolved = qt_recipe("tiny", {"resolution": 48, "seed": 3}, {"steps": 9}, {"steps": 5,
                         "warmup_steps": 1})  # fmt: skip
    assert resolved.recipe.steps == 9 and resolved.sources["steps"] == "command line"
    assert resolved.recipe.warmup_steps == 1 and resolved.sources["warmup_steps"] == "config file"
    assert resolved.sources["batch_size"] == "quality-tuning preset tiny"
    assert resolved.sources["lr_schedule"] == "quality-tuning recipe"
    assert (resolved.recipe.resolution, resolved.sources["resolution"]) == (48, "pre-trained model")
    assert resolved.sources["weight_decay"] == "default"
    lines = resolved.table().splitlines()
    assert len(lines) == len(resolved.sources)
    assert any(line.split()[:3] == ["steps", "9", "command"] for line in lines)


def test_a_backends_learning_rate_scale_applies_to_the_default_not_to_the_users_rate():
    shared = qt_recipe("small", {}).recipe.learning_rate
    scaled = qt_recipe("small", {}, lr_scale=5.0).recipe.learning_rate
    assert scaled == pytest.approx(5 * shared)
    chosen = qt_recipe("small", {}, {"learning_rate": 3e-5}, lr_scale=5.0).recipe
    assert chosen.learning_rate == 3e-5


def test_early_stopping_keeps_the_peak_and_stops_after_patience():
    rule = EarlyStopping(patience=2, faithfulness_margin=0.1, window=1)
    curve = [(0, 0.40, 0.5), (10, 0.45, 0.5), (20, 0.52, 0.48), (30, 0.51, 0.5), (40, 0.50, 0.5)]
    decisions = [rule.update(*point) for point in curve]
    assert [d.best for d in decisions] == [True, True, True, False, False]
    assert [d.stop for d in decisions] == [False, False, False, False, True]
    assert "did not rise above 0.520" in decisions[-1].reason
    assert rule.best_step == 20

    replayed = EarlyStopping(patience=2, faithfulness_margin=0.1, window=1)
    replayed.restore(rule.points[:4])  # what a resumed run reads back from curve.json
    assert replayed.best_step == 20 and replayed.update(*curve[4]).stop


def test_early_stopping_judges_a_step_on_its_mean_appeal_over_the_window():
    # The masked demo's curve (steps 0-250): the single high reading at step 50 is noise; the
    # panel preferred step 225 to the untuned model in 73.3 % of 288 pairs, step 50 in 63.5 %.
    curve = [(0, 0.463), (25, 0.467), (50, 0.539), (75, 0.481), (100, 0.510), (125, 0.536),
             (150, 0.533), (175, 0.528), (200, 0.545), (225, 0.539), (250, 0.523)]  # fmt: skip
    one = EarlyStopping(patience=3, faithfulness_margin=0.1, window=1)
    stops = [one.update(step, appeal, 0.4).stop for step, appeal in curve[:6]]
    assert one.best_step == 50 and stops == [False] * 5 + [True]  # stopped at 125

    two = EarlyStopping(patience=3, faithfulness_margin=0.1, window=2)
    decisions = [two.update(step, appeal, 0.4) for step, appeal in curve]
    assert two.best_step == 225 and not any(d.stop for d in decisions)
    assert two.mean_appeal(two.best) == pytest.approx((0.545 + 0.539) / 2)
    assert two.mean_appeal(two.points[0]) == 0.463  # the start has no reading before it
    assert two.to_dict()["window"] == 2
    # two more low readings (not measured) make three without a gain
    assert not two.update(275, 0.520, 0.4).stop
    stop = two.update(300, 0.510, 0.4)
    assert stop.stop and "did not rise above 0.542 (step 225, mean of 2 readings)" in stop.reason
    with pytest.raises(ValueError, match="window must be >= 1"):
        EarlyStopping(window=0)


def test_early_stopping_stops_when_faithfulness_falls():
    rule = EarlyStopping(patience=5, faithfulness_margin=0.05)
    assert not rule.update(0, 0.40, 0.60).stop
    assert rule.update(10, 0.50, 0.58).best
    dip = rule.update(20, 0.70, 0.50)  # more appealing, but below the margin: never the best
    assert not dip.stop and not dip.best
    recovered = rule.update(30, 0.60, 0.57)  # one low reading was noise: training goes on
    assert recovered.best and not recovered.stop
    assert not rule.update(40, 0.75, 0.52).stop
    falling = rule.update(50, 0.80, 0.51)  # the second in a row: it forgot the captions
    assert falling.stop and not falling.best
    assert "faithfulness fell from 0.600 to 0.510" in falling.reason
    assert "2 validations in a row" in falling.reason
    assert rule.best_step == 30

    replayed = EarlyStopping(patience=5, faithfulness_margin=0.05)
    replayed.restore(rule.points[:5])  # a run resumed after the first low point
    assert replayed.falling == 1 and replayed.update(50, 0.80, 0.51).stop


def test_cached_encodings_equal_the_encoder_and_training_never_calls_it(
    tiny_latent, world, tmp_path
):
    from emu_latent_diffusion.backend import LatentDiffusion

    from emu_cli.checkpoint.folder import load_checkpoint
    from emu_cli.data import index_dataset
    from emu_cli.data.dataset import TrainingDataset, collate, image_sizes
    from emu_cli.training.cache import EncodingCache
    from emu_cli.training.recipe import Recipe
    from emu_cli.training.session import make_accelerator
    from emu_cli.training.trainer import Trainer, bucket_multiple, training_buckets

    class CountingLatent(LatentDiffusion):
        calls = 0
        rows = 0

        def encode(self, model, stage, images, captions, **framings):
            CountingLatent.calls += 1
            CountingLatent.rows += len(images)
            return super().encode(model, stage, images, captions, **framings)

    backend = CountingLatent()
    _, model, _ = load_checkpoint(tiny_latent, backend)
    recipe = Recipe(steps=4, batch_size=8, resolution=32, caption_dropout=0.5, ema_decay=0,
                    checkpoint_every=0, preview_every=0, warmup_steps=1)  # fmt: skip
    index = index_dataset(world)
    # the world's few very wide or tall images train in their own aspect buckets
    multiple = bucket_multiple(backend, model, "denoiser", recipe)
    buckets = training_buckets(image_sizes(index.samples), 32, multiple)
    assert buckets is not None and len(buckets.counts()) > 1
    view = TrainingDataset(index, 32, caption_dropout=0.5, sizes=buckets.size_of)
    cache = EncodingCache(backend, batch_size=64)
    cache.warm(model, "denoiser", view.variants(), view.variant_count())
    warmed = CountingLatent.calls
    assert warmed == cache.encoder_calls and len(cache) > len(index) * 2
    # each image (and its mirror) went through the autoencoder once, not once per caption
    # variant: the token ids depend on the caption alone (Backend.caption_encodings)
    pictures = {(s.key, flip) for s in index.samples for flip in (False, True)}
    assert view.variant_count() == 2 * len(pictures)
    assert CountingLatent.rows <= len(pictures) + 1

    square = [i for i, s in enumerate(index.samples) if buckets.size_of[s.key] == (32, 32)]
    images, captions, framings, _ = collate([view[i] for i in square[:6]])
    cached = cache.encode(model, "denoiser", images, captions, framings)
    assert CountingLatent.calls == warmed, "every variant the loader yields was warmed"
    direct = LatentDiffusion().encode(model, "denoiser", images, captions)
    for name in direct:
        torch.testing.assert_close(cached[name], direct[name], rtol=1e-5, atol=1e-5)

    accelerator = make_accelerator("cpu", recipe, tmp_path)
    Trainer(backend, model, "denoiser", recipe, index, tmp_path, accelerator,
            encode=cache.encode).run(None)  # fmt: skip
    assert CountingLatent.calls == warmed, "the encoder ran during quality-tuning steps"


def _qt_args(model, data, out, prompts):
    return ["quality-tune", "--model", model, "--data", data, "--out", out, "--device", "cpu",
            "--steps", 8, "--validate-every", 4, "--validation-sampling-steps", 3,
            "--validation-prompts", prompts]  # fmt: skip


@pytest.fixture(scope="module")
def tuned(tiny_latent, world, tmp_path_factory):
    """The tiny latent model quality-tuned for 8 steps through the CLI, validated every 4."""
    folder = tmp_path_factory.mktemp("qt")
    prompts = folder / "validation.txt"
    prompts.write_text("a red star on a sunset background\na blue circle on a sand background\n")
    emu(*_qt_args(tiny_latent, world, folder / "qt", prompts))
    return folder / "qt", prompts


@pytest.mark.slow
def test_quality_tune_then_evaluate_through_the_cli(tuned, tiny_latent, world, tmp_path):
    qt, _ = tuned
    provenance = json.loads((qt / "emu.json").read_text())
    tuning = provenance["quality_tuning"]
    assert provenance["parent"] == str(tiny_latent)
    assert provenance["recipes"]["quality-tune"]["noise_offset"] == 0.1
    # the world's junk holds tiny images, upscaled to the 32 px the model trains at; said
    from emu_cli.data import index_dataset
    from emu_cli.training.plan import measure_sides

    smaller = measure_sides(index_dataset(world), limit=None).smaller_than(32)
    assert provenance["data"]["upscaled"] == smaller > 0
    assert tuning["encoder_calls_while_training"] == 0
    points = tuning["curve"]["points"]
    assert [p["step"] for p in points] == [0, 4, 8]
    appeal = [p["appeal"] for p in points]  # a step is judged with the validation before it
    means = [appeal[0]] + [(a + b) / 2 for a, b in zip(appeal, appeal[1:], strict=False)]
    best = points[means.index(max(means))]
    assert tuning["curve"]["window"] == 2
    assert tuning["chosen_step"] == best["step"] == provenance["step"]
    folder = qt / "stages" / "quality-tune"
    assert (folder / "curve.png").is_file() and (folder / "validation/step-00000008.png").is_file()
    assert json.loads((folder / "curve.json").read_text())["best_step"] == best["step"]

    evaluation = tmp_path / "eval"
    run = ("evaluate", "--a", qt, "--b", tiny_latent, "--prompts", "builtin:world-small",
           "--out", evaluation, "--sampling-steps", 3, "--device", "cpu",
           "--resamples", 200)  # fmt: skip
    printed = emu(*run).stdout
    assert "visual appeal      unseen  A preferred" in printed
    assert f"A: {qt}\nB: {tiny_latent}" in printed, "the table names the models it compares"
    results = json.loads((evaluation / "results.json").read_text())
    assert results["pairs"] == 32 and results["votes"] == 32 * (5 + 3)
    for protocol in ("appeal", "faithfulness"):
        for subset in ("all", "seen", "unseen"):
            rate = results["protocols"][protocol][subset]
            assert rate["a"] + rate["b"] + rate["tie"] == pytest.approx(1, abs=1e-3)
            assert rate["interval"]["a"][0] <= rate["a"] <= rate["interval"]["a"][1]
    assert results["protocols"]["appeal"]["unseen"]["pairs"] == 8
    assert set(results["proxies"]["world_appeal"]["all"]) == {"a", "b"}
    html = (evaluation / "report.html").read_text()
    assert html.count("<figure") == 32 and "qt preferred" in html
    first = evaluation / "images" / "a" / "0000-00.png"
    stamp = first.stat().st_mtime_ns
    emu(*run)
    assert first.stat().st_mtime_ns == stamp, "a rerun reuses the generated images"
    assert json.loads((evaluation / "results.json").read_text()) == results


def test_quality_tune_refuses_an_unfinished_model_and_an_existing_run(tiny_latent, world, tmp_path):
    result = emu("quality-tune", "--model", tmp_path / "nothing", "--data", world, "--out",
                 tmp_path / "qt", check=False)  # fmt: skip
    assert result.returncode == 1 and "does not exist" in result.stderr
    busy = tmp_path / "busy"
    (busy / "stages" / "quality-tune").mkdir(parents=True)
    result = emu("quality-tune", "--model", tiny_latent, "--data", world, "--out", busy,
                 check=False)  # fmt: skip
    assert result.returncode == 1 and "--resume latest" in result.stderr


@pytest.mark.slow
def test_killed_quality_tuning_resumes_to_the_same_result(tuned, tiny_latent, world, tmp_path):
    from test_training import _weights

    straight, prompts = tuned
    killed = tmp_path / "qt"
    latest = killed / "stages" / "quality-tune" / "checkpoints" / "latest"
    kill_after(_qt_args(tiny_latent, world, killed, prompts), latest)
    assert not (killed / "emu.json").exists()

    for extra, change in (
        (("--lr", "0.5"), "other settings (learning_rate 0.0003 -> 0.5"),  # 1e-4 x latent's 3
        (("--subset", "20"), f"data {world} -> {world} (other samples)"),
        (("--resume", tiny_latent), "is not a quality-tuning checkpoint"),
    ):
        refused = invoke(
            *_qt_args(tiny_latent, world, killed, prompts), "--resume", "latest", *extra
        )
        assert refused.exit_code == 1, refused.output
        assert change in refused.output

    resumed = emu(*_qt_args(tiny_latent, world, killed, prompts), "--resume", "latest")
    assert "resuming quality-tuning from" in resumed.stderr
    tuning = [
        json.loads((run / "emu.json").read_text())["quality_tuning"] for run in (straight, killed)
    ]
    assert tuning[0]["chosen_step"] == tuning[1]["chosen_step"]
    assert [p["step"] for p in tuning[1]["curve"]["points"]] == [0, 4, 8], "no validation twice"
    for first, second in zip(
        tuning[0]["curve"]["points"], tuning[1]["curve"]["points"], strict=True
    ):
        assert first["appeal"] == pytest.approx(second["appeal"], abs=1e-5)
    expected, again = _weights(straight), _weights(killed)
    assert expected and expected.keys() == again.keys()
    worst = max((expected[k] - again[k]).abs().max().item() for k in expected)
    assert worst < 1e-6, f"resumed weights differ by {worst}"


@pytest.mark.parametrize("name", ["latent", "masked", "pixel"])
def test_reconstruct_is_the_round_trip_through_the_stages_below_the_generator(name):
    # What quality-tuning can reach at most (bench/appeal_ceiling.py): a pixel generator draws
    # pixels; the others draw through their first stage, whose preview measures the same trip.
    from emu_cli.kit.reconstruction import psnr
    from emu_cli.plugin.registry import get_backend

    backend = get_backend(name)
    torch.manual_seed(0)
    model = backend.build("tiny", {})
    first = backend.stages[0].name
    size = backend.stage(first).defaults["tiny"]["resolution"]
    images = torch.rand(2, 3, size, size) * 2 - 1
    back = backend.reconstruct(model, images)
    assert back.shape == images.shape
    if name == "pixel":
        assert torch.equal(back, images)
        return
    assert not torch.allclose(back, images, atol=0.1), "an untrained round trip loses detail"
    _, metrics = backend.preview(model, first, images, ["a red star on snow"] * 2, seed=0)
    assert metrics["psnr"] == pytest.approx(float(psnr(back, images).mean()), rel=1e-5)


def test_gradient_checkpointing_trains_to_the_same_weights_and_says_so(
    tiny_latent, world, tmp_path
):
    """Recomputing activations in the backward pass (memory for compute) must not change what
    is learned; the run plan says it is on."""
    from safetensors.torch import load_file

    runs = {}
    for name, flag in (("plain", "--no-gradient-checkpointing"),
                       ("checkpointed", "--gradient-checkpointing")):  # fmt: skip
        out = tmp_path / name
        result = emu("quality-tune", "--model", tiny_latent, "--data", world, "--out", out,
                     "--steps", 2, "--batch-size", 4, "--no-early-stopping", "--device", "cpu",
                     flag)  # fmt: skip
        plan = json.loads((out / "plan.json").read_text())
        runs[name] = (load_file(out / "unet" / "diffusion_pytorch_model.safetensors"), plan)
        said = result.stdout + result.stderr
        assert ("gradient checkpointing" in said) == (name == "checkpointed")
    plain, checkpointed = runs["plain"][0], runs["checkpointed"][0]
    for key, value in plain.items():
        torch.testing.assert_close(checkpointed[key], value, rtol=1e-5, atol=1e-6)
    assert [runs[n][1]["stages"][0]["gradient_checkpointing"] for n in runs] == [False, True]
    from emu_latent_diffusion.backend import LatentDiffusion

    from emu_cli.checkpoint.folder import load_checkpoint
    from emu_cli.training.recipe import Recipe
    from emu_cli.training.trainer import checkpoint_activations

    backend = LatentDiffusion()
    _, model, _ = load_checkpoint(tiny_latent, backend)
    module = backend.training_module(model, "denoiser", Recipe())
    reached = checkpoint_activations(module, "the denoiser")
    assert "unet" in reached and model["unet"].is_gradient_checkpointing
    with pytest.raises(ValueError, match="supports gradient checkpointing"):
        checkpoint_activations(torch.nn.Linear(2, 2), "a bare layer")


def test_8bit_adamw_keeps_one_byte_moments_and_resumes_to_the_same_weights(
    tiny_latent, world, tmp_path
):
    """--optimizer adamw8bit (bitsandbytes): the plan says so, the checkpoint's moments are
    one byte a parameter (but for small tensors), and a run killed after its step-2
    checkpoint resumes to the weights of one that was not; changing the optimizer on resume
    is refused."""
    from safetensors.torch import load_file
    from test_training import _weights

    def args(out):
        return ["quality-tune", "--model", tiny_latent, "--data", world, "--out", out,
                "--steps", 4, "--no-early-stopping", "--device", "cpu",
                "--optimizer", "adamw8bit", "--config", config]  # fmt: skip

    config = tmp_path / "run.yaml"
    config.write_text("checkpoint_every: 2\n")
    straight = emu(*args(tmp_path / "straight"))
    assert "8-bit AdamW" in straight.stderr
    killed = tmp_path / "killed"
    kill_after(args(killed), killed / "stages" / "quality-tune" / "checkpoints" / "latest")
    state = load_file(next((killed / "stages" / "quality-tune" / "checkpoints").glob(
        "step-*/state.safetensors")))  # fmt: skip
    moments = [v for k, v in state.items() if k.endswith(("/state1", "/state2"))]
    # bitsandbytes keeps tensors under 4,096 entries (biases, norms) in 32 bits
    small = sum(v.numel() for v in moments if v.dtype != torch.uint8)
    assert moments and small < 0.1 * sum(v.numel() for v in moments)
    refused = invoke(*[a for a in args(killed) if a != "adamw8bit"][:-3], "--optimizer",
                     "adamw", "--config", config, "--resume", "latest")  # fmt: skip
    assert refused.exit_code == 1 and "(optimizer 'adamw8bit' -> 'adamw')" in refused.output
    emu(*args(killed), "--resume", "latest")
    expected, again = _weights(tmp_path / "straight"), _weights(killed)
    assert expected and expected.keys() == again.keys()
    assert all(torch.equal(expected[k], again[k]) for k in expected)
