import json
import subprocess
import sys
import time

import click
from click.testing import CliRunner

from conftest import emu, invoke
from emu_cli.cli import cli

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
    result = emu("--help", process=True)  # the start-up a user waits for
    elapsed = time.perf_counter() - started
    for command in COMMANDS:
        assert f"  {command}" in result.stdout
    assert elapsed < 2.0, f"`emu --help` took {elapsed:.2f}s"


def test_help_and_backends_do_not_import_torch():
    code = (
        "import sys; from emu_cli.cli import cli; from emu_cli.plugin import registry as plugins; "
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


def _commands(group: click.Group, path: str = "emu"):
    for name, command in group.commands.items():
        if isinstance(command, click.Group):
            yield f"{path} {name}", command
            yield from _commands(command, f"{path} {name}")
        else:
            yield f"{path} {name}", command


def _value_kind(option: click.Option) -> str:
    if option.is_flag:
        return "flag"
    for kind, types in (("int", click.types._NumberParamTypeBase), ("path", click.Path)):
        if isinstance(option.type, types):
            return "float" if "float" in option.type.name else kind
    return "text"  # free text or one of a command's choices


def test_every_option_has_help_and_each_concept_one_name():
    """Walks the whole command tree: every option says what it does, every command takes
    --config, training steps and sampling steps have different names everywhere, a count is
    never `--n`, and an option name means one kind of value across commands."""
    commands = dict(_commands(cli))
    assert {"emu pretrain", "emu data synth", "emu filter train-clip", "emu judge calibrate"} <= (
        commands.keys()
    )
    kinds: dict[str, set[tuple[str, str]]] = {}
    for path, command in commands.items():
        options = [p for p in command.params if isinstance(p, click.Option) and not p.hidden]
        for option in options:
            name = option.opts[0]
            assert option.help and option.help.strip(), f"{path} {name} has no help"
            kinds.setdefault(name, set()).add((_value_kind(option), path))
            about_sampling = "sampling steps" in option.help.lower()
            assert about_sampling == name.endswith("sampling-steps"), (path, name, option.help)
            assert not set(option.opts) & {"--n", "--num", "--count", "--samples", "--rated"}, (
                f"{path} {name}: counts are --num-THINGS"
            )
        if not isinstance(command, click.Group) and path != "emu backends":
            assert "--config" in {o for p in options for o in p.opts}, f"{path} has no --config"
    for name, uses in kinds.items():
        assert len({kind for kind, _ in uses}) == 1, f"{name} means different things: {uses}"


def test_unknown_backend_is_a_clear_error(world, tmp_path):
    result = emu(
        "pretrain", "--backend", "nope", "--data", world, "--out", tmp_path / "o", check=False
    )
    assert result.returncode == 1
    assert "unknown backend 'nope'" in result.stderr and "latent" in result.stderr


def test_counts_below_one_are_refused_naming_the_option(world, tmp_path):
    # an output that cannot be written is named, not a traceback
    (tmp_path / "a-file").write_text("")
    result = CliRunner().invoke(
        cli,
        [
            "data",
            "rate",
            "--data",
            str(world),
            "--num-images",
            "5",
            "--out",
            str(tmp_path / "a-file" / "r"),
        ],
    )
    assert result.exit_code == 1 and "Error: File exists:" in result.output, result.output
    assert "a-file" in result.output

    # options click checks (the bad one first: click reports the first it meets)
    model, out = tmp_path / "model", tmp_path / "out"
    qt = ("--model", model, "--data", world, "--out", out)
    for command, bad in (
        (("data rate", "--data", world, "--out", tmp_path / "r.jsonl"), ("--num-images", "0")),
        (("data synth", "--out", tmp_path / "pool"), ("--num-images", "-5")),
        (("evaluate", "--a", model, "--b", model, "--out", out), ("--sampling-steps", "0")),
        (("evaluate", "--a", model, "--b", model, "--out", out), ("--resamples", "0")),
        (("generate", "--model", model, "a red star"), ("--sampling-steps", "0")),
        (("generate", "--model", model, "a red star"), ("--images-per-prompt", "0")),
        (("quality-tune", *qt), ("--validation-sampling-steps", "0")),
        (("quality-tune", *qt), ("--patience", "0")),
        (("quality-tune", *qt), ("--appeal-window", "0")),
        (("quality-tune", *qt), ("--faithfulness-margin", "-1")),
        (("filter", "--data", world, "--out", out), ("--workers", "0")),
        (("filter", "--data", world, "--out", out), ("--chunk-size", "0")),
        (("review", world, "--stage", "generalist"), ("--num-annotators", "0")),
    ):
        result = CliRunner().invoke(cli, [*command[0].split(), *bad, *map(str, command[1:])])
        assert result.exit_code == 2, (bad, result.output)
        assert "Invalid value for" in result.output and f"'{bad[0]}'" in result.output, (
            result.output
        )
    assert not out.exists() and not (tmp_path / "pool").exists()


def test_config_file_sets_options_and_command_line_overrides(tmp_path, world):
    from emu_cli.cli.train import pretrain

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


def test_recipe_values_are_read_as_their_field_or_refused_naming_it(tmp_path, world):
    from emu_cli.config import read_config
    from emu_cli.training.recipe import Recipe

    # PyYAML (YAML 1.1) reads 1e-2 as text; a config file means the number
    config = tmp_path / "run.yaml"
    config.write_text("weight_decay: 1e-2\nwarmup_steps: 1e1\nema_decay: .5\n")
    recipe = Recipe().updated(**read_config(config)).validate()
    assert (recipe.weight_decay, recipe.warmup_steps, recipe.ema_decay) == (0.01, 10, 0.5)
    assert isinstance(recipe.warmup_steps, int)

    def refused(*args: object, config_text: str | None = None) -> str:
        out = tmp_path / "o"
        extra: tuple[object, ...] = ()
        if config_text is not None:
            config.write_text(config_text)
            extra = ("--config", config)
        result = CliRunner().invoke(
            cli,
            ["pretrain", "--backend", "latent", "--preset", "tiny", "--data", str(world),
             "--out", str(out), *map(str, extra), *map(str, args)],
        )  # fmt: skip
        assert result.exit_code != 0, result.output
        assert not out.exists(), "refused before anything is written"
        return result.output

    assert "warmup_steps must be a whole number, got 'abc'" in refused(
        config_text="warmup_steps: abc\n"
    )
    assert "warmup_steps must be a whole number, got 2.5" in refused(
        config_text="warmup_steps: 2.5\n"
    )
    assert "random_flip must be true or false, got 'maybe'" in refused(
        config_text="random_flip: maybe\n"
    )
    assert "learning_rate must be a number > 0, got 0.0" in refused("--lr", "0")
    assert "learning_rate must be a number > 0, got -1.0" in refused("--lr", "-1")
    assert "noise_offset must be >= 0, got -0.5" in refused("--noise-offset", "-0.5")
    assert "preview_every must be >= 0, got -3" in refused("--preview-every", "-3")
    # a later stage's recipe is checked before the first stage trains
    assert "adam_beta2 must be in [0, 1), got 1.5" in refused(
        config_text="stages_recipe:\n  denoiser:\n    adam_beta2: 1.5\n"
    )
    assert "stages_recipe names no stage of backend 'latent': denoisr" in refused(
        config_text="stages_recipe:\n  denoisr:\n    steps: 3\n"
    )


def test_backend_options_are_checked_against_their_defaults(tmp_path, world):
    cases = [
        ("latent", "colour=red", "backend 'latent' has no option colour"),
        ("latent", "snr_gamma=abc", "option snr_gamma must be a number, not 'abc'"),
        ("latent", "vae=3", "option vae must be a mapping, not 3"),
        ("latent", "fourier_frequencies=many", "option fourier_frequencies must be a number"),
        ("pixel", "superres_factor=abc", "option superres_factor must be a number, not 'abc'"),
        ("pixel", "superres_factor=3", "superres_factor must be 1 (off), 2 or 4, got 3"),
        ("masked", "train_text_encoder=maybe", "option train_text_encoder must be true or false"),
        ("masked", "adversarial_weight=high", "option adversarial_weight must be a number"),
    ]
    for backend, option, message in cases:
        out = tmp_path / backend
        result = CliRunner().invoke(
            cli,
            ["pretrain", "--backend", backend, "--preset", "tiny", "--data", str(world),
             "--out", str(out), "--device", "cpu", "--option", option],
        )  # fmt: skip
        assert result.exit_code != 0 and message in result.output, (option, result.output)
        assert not (out / "emu.json").exists()


def test_print_recipe_shows_each_fields_value_and_its_layer(tmp_path, world):
    config = tmp_path / "run.yaml"
    config.write_text("steps: 40\nwarmup_steps: 3\nstages_recipe:\n  denoiser: {ema_decay: 0.5}\n")
    result = invoke("pretrain", "--backend", "latent", "--preset", "tiny", "--data", world,
                    "--out", tmp_path / "run", "--lr", "0.002", "--config", config,
                    "--print-recipe")  # fmt: skip
    assert result.exit_code == 0, result.output
    stages = {}
    for block in result.output.strip().split("\n\n"):
        title, *lines = block.splitlines()
        stages[title] = {line.split()[0]: line.split(maxsplit=2)[1:] for line in lines}
    assert list(stages) == ["stage autoencoder", "stage denoiser"]
    denoiser = stages["stage denoiser"]
    assert denoiser["learning_rate"] == ["0.002", "command line"]
    assert denoiser["steps"] == ["40", "config file"]
    assert denoiser["ema_decay"] == ["0.5", "stages_recipe.denoiser"]
    assert denoiser["batch_size"][1] == "preset tiny"
    assert denoiser["weight_decay"][1] == "default"
    assert stages["stage autoencoder"]["ema_decay"][1] == "preset tiny"
    assert not (tmp_path / "run").exists(), "printing the recipe trains nothing"
