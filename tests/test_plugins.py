"""The plugin contract, exercised the way third parties use it: installed distributions with
entry points in group `emu`, discovered by importlib.metadata in a fresh process. The plugin
guide's example backend (examples/emu-example-backend) is installed with pip and run through
every command a backend meets."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import emu, train_stage

HERE = Path(__file__).parent
EXAMPLE = HERE.parent / "examples" / "emu-example-backend"


def install(
    site: Path,
    distribution: str,
    version: str,
    entry_points: dict[str, str],
    modules: dict[str, str],
) -> None:
    """Install a distribution by writing its module and .dist-info, as pip would."""
    site.mkdir(parents=True, exist_ok=True)
    for name, source in modules.items():
        (site / f"{name}.py").write_text(source)
    info = site / f"{distribution.replace('-', '_')}-{version}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(
        f"Metadata-Version: 2.1\nName: {distribution}\nVersion: {version}\n"
    )
    lines = "\n".join(f"{name} = {target}" for name, target in entry_points.items())
    (info / "entry_points.txt").write_text(f"[emu]\n{lines}\n")


@pytest.fixture
def site(tmp_path) -> Path:
    """The example backend installed by pip, and a test plugin built on it."""
    site = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
         "--no-compile", "--target", str(site), str(EXAMPLE)],
        check=True, capture_output=True, cwd=tmp_path,
    )  # fmt: skip
    install(
        site,
        "emu-toy-backend",
        "0.3.0",
        {"toy": "emu_toy_backend"},
        {"emu_toy_backend": (HERE / "plugins" / "emu_toy_backend.py").read_text()},
    )
    return site


def _red_and_blue(folder: Path) -> Path:
    """Clean renders whose mean color follows the caption's color word, and nothing else."""
    from emu_cli.world.factors import clean_factors
    from emu_cli.world.render import render

    (folder / "images").mkdir(parents=True)
    lines = []
    for i in range(96):
        color = ("red", "blue")[i % 2]
        rng = np.random.default_rng(i)
        image = render("circle", color, "snow", 16, clean_factors(rng), rng)
        image.save(folder / "images" / f"{i:03d}.png")
        lines.append(
            json.dumps(
                {
                    "file_name": f"images/{i:03d}.png",
                    "text": f"a {color} circle on a snow background",
                }
            )
        )
    (folder / "metadata.jsonl").write_text("\n".join(lines) + "\n")
    return folder


def test_the_example_backend_runs_through_every_command(site, tmp_path):
    env = {"PYTHONPATH": str(site)}
    listed = json.loads(emu("backends", "--json", env=env).stdout)
    example = next(p for p in listed["plugins"] if p["name"] == "example")
    assert example == {
        "name": "example",
        "distribution": "emu-example-backend",
        "version": "0.1.0",
        "backends": ["example"],
        "filters": [],
        "judges": [],
        "panels": [],
        "prompt_sets": [],
        "captioners": [],
    }
    assert "latent" in listed["backends"], "installing a plugin keeps the others"

    out = tmp_path / "example-run"
    data = _red_and_blue(tmp_path / "red-and-blue")
    emu(
        "pretrain",
        "--backend",
        "example",
        "--preset",
        "tiny",
        "--data",
        data,
        "--out",
        out,
        "--steps",
        "30",
        "--device",
        "cpu",
        env=env,
    )
    provenance = json.loads((out / "emu.json").read_text())
    assert provenance["backend"] == "example" and provenance["steps"] == {"colors": 30}
    records = [
        json.loads(line) for line in (out / "stages/colors/log.jsonl").read_text().splitlines()
    ]
    losses = [r["loss"] for r in records if "loss" in r]
    first, last = sum(losses[:5]) / 5, sum(losses[-5:]) / 5
    assert last < 0.7 * first, f"the shared trainer trains a third-party model ({first} -> {last})"

    emu(
        "generate",
        "--model",
        out,
        "a red circle on a snow background",
        "a blue circle on a snow background",
        "-n",
        "1",
        "--out",
        tmp_path / "g",
        env=env,
    )
    red = np.asarray(Image.open(tmp_path / "g" / "000-00.png"), dtype=float).mean(axis=(0, 1))
    blue = np.asarray(Image.open(tmp_path / "g" / "001-00.png"), dtype=float).mean(axis=(0, 1))
    assert red[0] - red[2] > blue[0] - blue[2], "it learned that red captions mean redder images"

    tuned = tmp_path / "example-tuned"
    # its data is not the world's pool: the judge and prompts are named, as for a real model
    emu("quality-tune", "--model", out, "--data", data, "--out", tuned, "--device", "cpu",
        "--steps", 8, "--validate-every", 4, "--validation-sampling-steps", 2, "--judge", "world",
        "--validation-prompts", "builtin:validation", env=env)  # fmt: skip
    record = json.loads((tuned / "emu.json").read_text())
    assert record["quality_tuning"]["steps_trained"] == 8
    assert [point["step"] for point in record["quality_tuning"]["curve"]["points"]] == [0, 4, 8]
    evaluation = tmp_path / "example-eval"
    emu("evaluate", "--a", tuned, "--b", out, "--prompts", "builtin:world-small",
        "--out", evaluation, "--device", "cpu", "--judge", "world", env=env)  # fmt: skip
    results = json.loads((evaluation / "results.json").read_text())
    assert results["pairs"] == 32 and results["votes"] == 32 * 8  # 5 appeal, 3 faithfulness


def test_plugins_can_add_commands(site):
    env = {"PYTHONPATH": str(site)}
    assert "example-palette" in emu("--help", env=env).stdout
    buckets = emu("example-palette", "a red star", env=env).stdout.split()
    assert len(buckets) == 3 and all(b.isdigit() for b in buckets)


def test_gradient_accumulation_matches_one_larger_batch(world, tmp_path):
    """Two micro-batches of 4 take the same step as one batch of 8 (the same 8 samples)."""
    import torch

    sys.path.insert(0, str(EXAMPLE))
    from emu_example_backend import ColorBackend

    backend, weights = ColorBackend(), []
    for batch, accumulate in [(8, 1), (4, 2)]:
        torch.manual_seed(0)  # as `emu pretrain --seed` seeds a build
        model = backend.build("tiny", {})
        train_stage(
            backend,
            model,
            "colors",
            world,
            tmp_path / f"{batch}",
            steps=5,
            batch_size=batch,
            gradient_accumulation_steps=accumulate,
            learning_rate=0.2,
            warmup_steps=1,
            ema_decay=0,
            resolution=16,
            caption_dropout=0,
            checkpoint_every=0,
            preview_every=0,
        )
        weights.append(model["colors"].table.weight.detach().clone())
    torch.manual_seed(0)
    assert not torch.equal(weights[0], backend.build("tiny", {})["colors"].table.weight)
    assert torch.allclose(weights[0], weights[1], atol=2e-3)


def test_allow_list_limits_which_plugins_load(site):
    env = {"PYTHONPATH": str(site), "EMU_LOAD_PLUGINS": "example"}
    listed = json.loads(emu("backends", "--json", env=env).stdout)
    assert list(listed["backends"]) == ["example"]
    env["EMU_LOAD_PLUGINS"] = "emu-latent-diffusion"  # distribution names work too
    assert list(json.loads(emu("backends", "--json", env=env).stdout)["backends"]) == ["latent"]
    env["EMU_LOAD_PLUGINS"] = ""
    assert json.loads(emu("backends", "--json", env=env).stdout)["backends"] == {}


def test_broken_plugins_are_named_and_do_not_break_the_rest(site, world, tmp_path):
    install(
        site,
        "emu-broken-import",
        "1.0",
        {"broken": "emu_broken_import"},
        {"emu_broken_import": "raise ImportError('needs libfoo, which is missing')\n"},
    )
    install(
        site,
        "emu-broken-register",
        "2.0",
        {"badreg": "emu_broken_register"},
        {
            "emu_broken_register": (
                "from emu_cli.plugin.hookspecs import hookimpl\n"
                "@hookimpl\n"
                "def register_backends(register):\n"
                "    raise RuntimeError('registration exploded')\n"
            )
        },
    )
    env = {"PYTHONPATH": str(site)}
    helped = emu("--help", env=env)
    assert "pretrain" in helped.stdout
    assert "plugin 'broken' (distribution emu-broken-import) failed" in helped.stderr
    assert "needs libfoo" in helped.stderr

    listed = json.loads(emu("backends", "--json", env=env).stdout)
    assert set(listed["backends"]) == {"latent", "masked", "pixel", "example", "toy"}
    failures = {f["name"]: f for f in listed["failed"]}
    assert "ImportError: needs libfoo" in failures["broken"]["error"]
    assert failures["badreg"]["distribution"] == "emu-broken-register"
    assert "registration exploded" in failures["badreg"]["error"]

    emu(
        "pretrain",
        "--backend",
        "toy",
        "--preset",
        "tiny",
        "--data",
        world,
        "--out",
        tmp_path / "still-works",
        "--steps",
        "2",
        "--device",
        "cpu",
        env=env,
    )


def test_diverging_loss_stops_with_a_clear_message_and_keeps_the_last_checkpoint(
    site, world, tmp_path
):
    out = tmp_path / "nan-run"
    result = emu(
        "pretrain",
        "--backend",
        "toy",
        "--preset",
        "tiny",
        "--data",
        world,
        "--out",
        out,
        "--steps",
        "20",
        "--checkpoint-every",
        "3",
        "--device",
        "cpu",
        env={"PYTHONPATH": str(site), "EMU_TOY_NAN_AT": "8"},
        check=False,
    )
    assert result.returncode == 1
    assert "became nan at step 8" in result.stderr  # the log holds steps 1-7
    assert "step-00000006" in result.stderr  # the last good checkpoint, named
    checkpoint = out / "stages" / "colors" / "checkpoints" / "step-00000006"
    assert (checkpoint / "model" / "colors.safetensors").is_file()
    assert not (out / "emu.json").exists(), "a diverged run is not claimed as a model"
