"""Nothing lost: one owner per output folder, and a resume that survives its own crashes."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys

import pytest
import torch

from conftest import emu, invoke
from emu_cli.lock import LOCK_NAME, FolderLock


def _dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def test_a_second_run_on_a_held_folder_is_refused_naming_the_owner(world, tmp_path):
    out = tmp_path / "run"
    pretrain = ("pretrain", "--backend", "latent", "--preset", "tiny", "--data", world,
                "--out", out, "--device", "cpu", "--steps", 2)  # fmt: skip
    with FolderLock(out, "emu pretrain"):
        refused = invoke(*pretrain)
        filtered = invoke("filter", "--data", world, "--out", out, "--filters", "size")
        evaluated = invoke("evaluate", "--a", "me/a", "--b", "me/b", "--out", out)
        generated = invoke("generate", "a red star", "--model", "me/a", "--out", out)
    for result in (refused, filtered, evaluated, generated):
        assert result.exit_code == 1, result.output
        assert f"is in use by emu pretrain (pid {os.getpid()} on" in result.output
    assert not (out / LOCK_NAME).exists(), "the owner gives the folder up when it is done"
    assert not (out / "emu.json").exists() and not (out / "manifest.parquet").exists()


def test_a_stale_lock_is_taken_over_and_said_so(world, tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    stale = {"pid": _dead_pid(), "host": os.uname().nodename, "command": "emu pretrain",
             "started": "2026-12-01T00:00:00Z"}  # fmt: skip
    (out / LOCK_NAME).write_text(json.dumps(stale))
    result = invoke("pretrain", "--backend", "latent", "--preset", "tiny", "--data", world,
                    "--out", out, "--device", "cpu", "--steps", 2)  # fmt: skip
    assert result.exit_code == 0, result.output
    assert f"taking over the lock of emu pretrain (pid {stale['pid']}" in result.output
    assert (out / "emu.json").is_file() and not (out / LOCK_NAME).exists()


def test_a_folder_replaced_as_a_whole_has_one_writer(tmp_path):
    from emu_cli.data.export import replacing

    target = tmp_path / "kept"
    with replacing(target) as folder:
        (folder / "a.txt").write_text("first")
        with pytest.raises(ValueError, match="is in use by"), replacing(target):
            pass
    assert (target / "a.txt").read_text() == "first"
    with pytest.raises(RuntimeError), replacing(target) as folder:
        (folder / "b.txt").write_text("half")
        raise RuntimeError("killed half-way")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["kept"], "no partial folder left"


@pytest.mark.slow
def test_resume_takes_the_newest_checkpoint_that_verifies(world, tmp_path):
    out = tmp_path / "run"
    args = ["pretrain", "--backend", "latent", "--preset", "tiny", "--data", world, "--out", out,
            "--device", "cpu", "--stage", "autoencoder", "--steps", 12, "--batch-size", 4,
            "--checkpoint-every", 2, "--preview-every", 0]  # fmt: skip
    assert invoke(*args).exit_code == 0
    (out / "emu.json").unlink()  # as if killed before the stage's end
    checkpoints = out / "stages" / "autoencoder" / "checkpoints"
    older, newest = sorted(checkpoints.glob("step-*"))
    state = newest / "state.safetensors"
    state.write_bytes(state.read_bytes()[: state.stat().st_size // 2])  # a crash mid-write
    (checkpoints / "latest").write_text("garbage")
    stale = checkpoints / f".step-00000099.tmp{_dead_pid()}"
    stale.mkdir()

    refused = invoke(*args, "--resume", newest)  # named: refused with the reason
    assert refused.exit_code == 1 and "is not a usable training checkpoint" in refused.output
    resumed = emu(*args, "--resume", "latest")  # a process of its own, as a user resumes
    assert f"passing over checkpoint {newest}: state.safetensors has" in resumed.stderr
    assert f"resuming stage 'autoencoder' from {older}" in resumed.stderr
    assert not stale.exists(), "a dead process's half-written checkpoint is removed"
    log = (out / "stages" / "autoencoder" / "log.jsonl").read_text().splitlines()
    steps = [json.loads(line)["step"] for line in log if '"loss"' in line]
    assert steps == list(range(1, 13)), "each step logged once"


def test_a_full_disk_names_the_folder_and_keeps_the_checkpoints_before(tmp_path):
    from emu_cli.checkpoint.state import latest_checkpoint, write_checkpoint
    from emu_cli.errors import EmuError

    weights = torch.nn.Linear(4, 4)
    optimizer = torch.optim.AdamW(weights.parameters())
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)

    def save_model(path):
        path.mkdir()
        (path / "weights.bin").write_bytes(b"\0" * 4096)

    def full_disk(path):
        path.mkdir()
        raise OSError(errno.ENOSPC, "No space left on device", str(path / "weights.bin"))

    folder = tmp_path / "checkpoints"
    first = write_checkpoint(folder, 2, save_model, optimizer, scheduler, {}, {}, keep=2)
    with pytest.raises(EmuError, match=r"no space left on the device of .* step 4 \(it takes"):
        write_checkpoint(folder, 4, full_disk, optimizer, scheduler, {}, {}, keep=2)
    assert sorted(p.name for p in folder.iterdir()) == ["latest", "step-00000002"]
    assert latest_checkpoint(folder) == first


def test_pickled_weights_are_refused_through_links_and_for_text_encoders(tmp_path):
    from emu_cli.errors import EmuError
    from emu_cli.files import refuse_pickles
    from emu_cli.kit.text import load_text_encoder

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "pytorch_model.bin").write_bytes(b"not loaded")
    model = tmp_path / "model"
    (model / "text_encoder").mkdir(parents=True)
    (model / "unet").symlink_to(elsewhere)  # a component that is a link to a pickle
    (model / "loop").symlink_to(model)  # and a link back up, which must not hang the walk
    with pytest.raises(EmuError, match=r"holds pickled weights \(unet/pytorch_model.bin\)"):
        refuse_pickles(model)
    with pytest.raises(EmuError, match="holds pickled weights"):
        load_text_encoder(str(model))
    from emu_cli.curate.clip import CONFIG_FILE, ClipEncoder

    clip = tmp_path / "clip"  # open_clip's layout, its weights a link to a pickle
    clip.mkdir()
    (clip / CONFIG_FILE).write_text("{}")
    (clip / "open_clip_pytorch_model.bin").symlink_to(elsewhere / "pytorch_model.bin")
    for spec, pretrained in ((clip, None), ("ViT-B-32", elsewhere / "pytorch_model.bin")):
        with pytest.raises(EmuError, match="holds pickled weights"):
            ClipEncoder.load(str(spec), str(pretrained) if pretrained else None)


def test_a_diverged_stage_keeps_a_checkpoint_from_before_and_resumes_at_a_lower_rate(
    world, tmp_path
):
    """A learning rate warmed up far too high: the loss spikes, then turns NaN."""
    out = tmp_path / "run"
    recipe = tmp_path / "recipe.yaml"
    # square crops: the trajectory this test reads was measured without aspect buckets
    recipe.write_text("warmup_steps: 200\nkeep_checkpoints: 3\naspect_buckets: false\n")
    args = ["pretrain", "--backend", "latent", "--preset", "tiny", "--data", world, "--out", out,
            "--device", "cpu", "--stage", "denoiser", "--steps", 40, "--batch-size", 4,
            "--checkpoint-every", 1, "--preview-every", 0, "--config", recipe]  # fmt: skip
    diverged = invoke(*args, "--lr", 10)
    assert diverged.exit_code == 1
    stage = out / "stages" / "denoiser"
    record = json.loads((stage / "diverged.json").read_text())
    log = [json.loads(line) for line in (stage / "log.jsonl").read_text().splitlines()]
    losses = [entry["loss"] for entry in log if "loss" in entry]
    bad_from = record["unsettled_since"] or record["step"]
    assert all(loss < 10 * losses[0] for loss in losses[: bad_from - 1]), "healthy before"
    kept = sorted(p.name for p in (stage / "checkpoints").glob("step-*"))
    # checkpoint N holds the weights whose loss step N + 1 logs: none from a bad loss is kept
    good = int(kept[-1].removeprefix("step-"))
    assert good <= bad_from - 2 and kept[-1] == record["kept_checkpoint"]
    assert record["set_aside"], "the checkpoints written after it are set aside, not resumed"
    assert f"The last checkpoint before the loss went bad is {stage}/checkpoints/{kept[-1]}" in (
        " ".join(diverged.output.split())
    )

    resumed = invoke(*args, "--lr", 1e-3, "--resume", "latest")  # the advice, followed
    assert resumed.exit_code == 0, resumed.output
    provenance = json.loads((out / "emu.json").read_text())
    assert provenance["recipes"]["denoiser"]["learning_rate"] == 1e-3
    assert provenance["resumed_with_changes"] == [
        {
            "stage": "denoiser",
            "resumed_at_step": good,
            "diverged_at_step": record["step"],
            "changes": {"learning_rate": [10.0, 1e-3]},
        }  # fmt: skip
    ]
    log = [json.loads(line) for line in (stage / "log.jsonl").read_text().splitlines()]
    assert [entry["step"] for entry in log if "loss" in entry] == list(range(1, 41))
