import json
import subprocess
import sys
import time

from conftest import emu, invoke

COMMANDS = [
    "pretrain",
    "filter",
    "review",
    "quality-tune",
    "generate",
    "evaluate",
    "push",
    "backends",
]


def test_help_lists_every_command_quickly():
    started = time.perf_counter()
    result = emu("--help")
    elapsed = time.perf_counter() - started
    for command in COMMANDS:
        assert f"  {command}" in result.stdout
    assert elapsed < 2.0, f"`emu --help` took {elapsed:.2f}s"


def test_help_and_backends_do_not_import_torch():
    code = (
        "import sys; from emu_cli.cli import cli; from emu_cli import plugins; "
        "plugins.get_backends(); print('torch' in sys.modules)"
    )
    assert subprocess.check_output([sys.executable, "-c", code], text=True).strip() == "False"


def test_backends_lists_latent_with_distribution_and_version():
    started = time.perf_counter()
    result = emu("backends", "--json")
    assert time.perf_counter() - started < 2.0
    data = json.loads(result.stdout)
    latent = next(p for p in data["plugins"] if "latent" in p["backends"])
    assert latent["distribution"] == "emu-latent-diffusion"
    assert latent["version"] == "0.1.0"
    text = emu("backends").stdout
    assert "backend latent" in text and "emu-latent-diffusion 0.1.0" in text


def test_unknown_backend_is_a_clear_error(world, tmp_path):
    result = emu(
        "pretrain", "--backend", "nope", "--data", world, "--out", tmp_path / "o", check=False
    )
    assert result.returncode == 1
    assert "unknown backend 'nope'" in result.stderr and "latent" in result.stderr


def test_counts_below_one_are_refused_naming_the_option(world, tmp_path):
    for command in (
        ("data", "rate", "--data", world, "--n", "0", "--out", tmp_path / "ratings.jsonl"),
        ("data", "synth", "--n", "-5", "--out", tmp_path / "pool"),
    ):
        result = emu(*command, check=False)
        assert result.returncode == 1 and "--n must be at least 1" in result.stderr
    assert not (tmp_path / "ratings.jsonl").exists() and not (tmp_path / "pool").exists()


def test_config_file_sets_options_and_command_line_overrides(tmp_path, world):
    from emu_cli.cli import pretrain

    config = tmp_path / "run.yaml"
    # `no` stays the word (YAML 1.1 would read it as False, not a --mixed-precision choice)
    config.write_text(
        "steps: 3\nbatch-size: 4\nwarmup_steps: 1\nnoise_offset: 0.05\nmixed-precision: no\n"
    )
    ctx = pretrain.make_context(
        "pretrain",
        [
            "--backend",
            "latent",
            "--data",
            str(world),
            "--out",
            str(tmp_path / "o"),
            "--config",
            str(config),
            "--steps",
            "5",
        ],
    )
    assert ctx.params["steps"] == 5  # command line wins
    assert ctx.params["batch_size"] == 4  # from the file
    assert ctx.params["noise_offset"] == 0.05  # an option, set from the file
    assert ctx.params["mixed_precision"] == "no"
    assert ctx.meta["config"] == {"warmup_steps": 1}  # a recipe field with no option

    toml = tmp_path / "run.toml"
    toml.write_text("steps = 7\n")
    ctx = pretrain.make_context(
        "pretrain",
        [
            "--backend",
            "latent",
            "--data",
            str(world),
            "--out",
            str(tmp_path / "o"),
            "--config",
            str(toml),
        ],
    )
    assert ctx.params["steps"] == 7


def test_config_file_with_unknown_key_is_rejected(tmp_path, world):
    config = tmp_path / "bad.yaml"
    config.write_text("stepz: 3\n")
    result = invoke(
        "pretrain",
        "--backend",
        "latent",
        "--data",
        world,
        "--out",
        tmp_path / "o",
        "--config",
        config,
    )
    assert result.exit_code == 2
    assert "unknown keys: stepz" in result.output
