"""Shared by the core's tests (tests/) and each plugin's (plugins/*/tests/): the real `emu` command,
a small world, a tiny pre-trained model."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

os.environ.setdefault("HF_HUB_OFFLINE", "1")
EMU = [sys.executable, "-m", "emu_cli"]
ARTIFACTS = Path(__file__).parent / "test-artifacts"


def emu(*args: str, check: bool = True, env: dict | None = None, timeout: int = 600):
    """Run the real `emu` command in a child process, as a user would."""
    result = subprocess.run(
        [*EMU, *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )
    if check and result.returncode != 0:
        raise AssertionError(f"emu {' '.join(map(str, args))} failed:\n{result.stderr[-3000:]}")
    return result


def kill_after(args: list, marker: Path, timeout: float = 300) -> None:
    """Start `emu ARGS`, wait until ``marker`` exists (e.g. a checkpoint), then SIGKILL it:
    a crash mid-run, to test resuming."""
    import signal
    import time

    process = subprocess.Popen([*EMU, *map(str, args)], stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)  # fmt: skip
    deadline = time.time() + timeout
    while not marker.exists() and process.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    assert process.returncode == -signal.SIGKILL, "the run must be killed before it ends"


def invoke(*args: str):
    """Run the CLI in-process (fast); returns click's Result."""
    from emu_cli.cli import cli

    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)


def train_stage(backend, model, stage: str, data: Path, folder: Path, **recipe_fields):
    """Train one stage in-process with the shared trainer (no CLI), on CPU."""
    from emu_cli.data import index_dataset
    from emu_cli.training.recipe import Recipe
    from emu_cli.training.session import make_accelerator
    from emu_cli.training.trainer import Trainer

    recipe = Recipe(**recipe_fields)
    accelerator = make_accelerator("cpu", recipe)
    return Trainer(backend, model, stage, recipe, index_dataset(data), folder, accelerator).run(
        None
    )


@pytest.fixture(scope="session")
def world(tmp_path_factory) -> Path:
    from emu_cli.world.synth import synthesize

    return synthesize(160, tmp_path_factory.mktemp("world"), seed=1, size=32, workers=1)


def pretrain_tiny(data: Path, out: Path, *extra: object, **kwargs):
    """`emu pretrain` of the tiny latent model on CPU; ``extra`` adds or overrides options."""
    return emu(
        "pretrain",
        "--backend",
        "latent",
        "--preset",
        "tiny",
        "--data",
        data,
        "--out",
        out,
        "--device",
        "cpu",
        *extra,
        **kwargs,
    )


@pytest.fixture(scope="session")
def tiny_latent(tmp_path_factory, world) -> Path:
    """A tiny latent model pre-trained through the real CLI (both stages)."""
    out = tmp_path_factory.mktemp("runs") / "latent"
    pretrain_tiny(
        world, out, "--steps", 12, "--batch-size", 8, "--checkpoint-every", 6, "--preview-every", 6
    )
    return out
