"""Training state for resume, written atomically, verified, and without pickle.

A checkpoint is a folder ``step-NNNNNNNN/`` holding the model (the backend's own folder format),
``state.safetensors`` (optimizer moments, EMA weights, RNG states), ``state.json`` (step,
scheduler, optimizer hyper-parameters) and ``manifest.json`` (every file's size and SHA-256,
written last). It is written to a temporary folder and renamed into place, then ``latest`` is
replaced, so a kill at any moment leaves the previous checkpoint whole. ``latest`` names the
newest for people and scripts; a resume does not trust it, but takes the newest checkpoint whose
files match its manifest, and says which it passed over and why.
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
import random
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from emu_cli.errors import EmuError
from emu_cli.files import write_atomic
from emu_cli.lock import process_alive

log = logging.getLogger("emu")
STATE_TENSORS = "state.safetensors"
STATE_JSON = "state.json"
MANIFEST = "manifest.json"
LATEST = "latest"


def _flatten_optimizer(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    state = optimizer.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    stored: set[int] = set()
    for index, values in state["state"].items():
        for key, value in values.items():
            # bitsandbytes keeps a parameter's quantised moments in a mapping of their own
            inner = value if isinstance(value, dict) else {"": value}
            for sub, item in inner.items():
                name = f"{key}/{sub}" if isinstance(value, dict) else key
                if isinstance(item, torch.Tensor):
                    tensor = item.detach().cpu().contiguous()
                    if tensor.data_ptr() in stored:  # shared (its quantisation map): a copy,
                        tensor = tensor.clone()  # as safetensors stores no tensor twice
                    stored.add(tensor.data_ptr())
                    tensors[f"optimizer.{index}.{name}"] = tensor
                else:
                    scalars.setdefault(str(index), {})[name] = item
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def _unflatten_optimizer(tensors: dict[str, torch.Tensor], meta: dict) -> dict:
    state: dict[int, dict[str, Any]] = {}

    def put(index: int, name: str, value: Any) -> None:
        entry = state.setdefault(index, {})
        if "/" in name:  # an item of a mapping (_flatten_optimizer)
            key, sub = name.split("/", 1)
            entry.setdefault(key, {})[sub] = value
        else:
            entry[name] = value

    for name, value in tensors.items():
        if name.startswith("optimizer."):
            _, index, key = name.split(".", 2)
            put(int(index), key, value)
    for index, values in meta["scalars"].items():
        for key, value in values.items():
            put(int(index), key, value)
    return {"state": state, "param_groups": meta["param_groups"]}


def rng_tensors() -> dict[str, torch.Tensor]:
    tensors = {"rng.torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        for i, state in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"rng.cuda.{i}"] = state
    return tensors


def restore_rng(tensors: dict[str, torch.Tensor], meta: dict) -> None:
    torch.set_rng_state(tensors["rng.torch"])
    cuda = [tensors[k] for k in sorted(tensors) if k.startswith("rng.cuda.")]
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda)
    random.setstate((meta["python_rng"][0], tuple(meta["python_rng"][1]), meta["python_rng"][2]))
    numpy_state = meta["numpy_rng"]
    np.random.set_state(
        (numpy_state[0], np.array(numpy_state[1], dtype=np.uint32), *numpy_state[2:])
    )


@dataclass
class Resumed:
    step: int
    model_path: Path
    tensors: dict[str, torch.Tensor]
    meta: dict[str, Any]


def write_checkpoint(
    folder: Path,
    step: int,
    save_model: Any,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    extra_tensors: dict[str, torch.Tensor],
    extra_meta: dict[str, Any],
    keep: int,
) -> Path:
    """Write checkpoint ``step`` under ``folder`` atomically; keep the newest ``keep``. A full
    disk is an error naming the folder and the space a checkpoint takes; the checkpoints
    before it stay whole."""
    folder.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(folder)
    final = folder / f"step-{step:08d}"
    temporary = folder / f".step-{step:08d}.tmp{os.getpid()}"
    shutil.rmtree(temporary, ignore_errors=True)
    try:
        temporary.mkdir()
        save_model(temporary / "model")
        optimizer_tensors, optimizer_meta = _flatten_optimizer(optimizer)
        tensors = {**optimizer_tensors, **extra_tensors, **rng_tensors()}
        save_file(tensors, temporary / STATE_TENSORS)
        python_state = random.getstate()
        numpy_state = np.random.get_state()
        meta = {
            "step": step,
            "optimizer": optimizer_meta,
            "scheduler": scheduler.state_dict(),
            "python_rng": [python_state[0], list(python_state[1]), python_state[2]],
            "numpy_rng": [numpy_state[0], numpy_state[1].tolist(), *numpy_state[2:]],
            **extra_meta,
        }
        (temporary / STATE_JSON).write_text(json.dumps(meta), encoding="utf-8")
        (temporary / MANIFEST).write_text(json.dumps(_manifest(temporary), indent=1))
    except Exception as error:
        needed = _size(temporary)
        shutil.rmtree(temporary, ignore_errors=True)
        if _out_of_space(error):
            raise EmuError(
                f"no space left on the device of '{folder}' for the checkpoint of step {step} "
                f"(it takes about {_megabytes(max(needed, _newest_size(folder)))}); the "
                "checkpoints before it are whole: free space, then resume with --resume latest"
            ) from error
        raise
    if final.exists():
        shutil.rmtree(final)
    os.replace(temporary, final)
    write_atomic(folder / LATEST, final.name)
    for old in sorted(folder.glob("step-*"))[:-keep] if keep > 0 else []:
        shutil.rmtree(old, ignore_errors=True)
    return final


def _out_of_space(error: BaseException) -> bool:
    while error is not None:
        if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        if "No space left on device" in str(error):  # safetensors' and tokenizers' own errors
            return True
        error = error.__cause__ or error.__context__
    return False


def _size(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) if path.exists() else 0


def _newest_size(folder: Path) -> int:
    steps = sorted(folder.glob("step-*"))
    return _size(steps[-1]) if steps else 0


def _megabytes(size: int) -> str:
    return f"{size / 1e6:.1f} MB"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _manifest(folder: Path) -> dict[str, dict[str, Any]]:
    """Every file of a checkpoint folder, by its path inside it: size and SHA-256."""
    return {
        str(path.relative_to(folder)): {"size": path.stat().st_size, "sha256": _sha256(path)}
        for path in sorted(folder.rglob("*"))
        if path.is_file() and path.name != MANIFEST
    }


def verify(path: Path) -> str | None:
    """Why checkpoint folder ``path`` cannot be resumed from, or None when every file its
    manifest lists is there with its size and hash. A checkpoint from before manifests is
    checked for its two state files only."""
    if not (path / STATE_JSON).is_file() or not (path / STATE_TENSORS).is_file():
        return f"no {STATE_JSON} or {STATE_TENSORS}"
    if not (path / MANIFEST).is_file():
        return None
    try:
        listed = json.loads((path / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        return f"its {MANIFEST} cannot be read ({error})"
    for name, expected in listed.items():
        file = path / name
        if not file.is_file():
            return f"{name} is missing"
        if file.stat().st_size != expected["size"]:
            return f"{name} has {file.stat().st_size} bytes, not {expected['size']}"
        if _sha256(file) != expected["sha256"]:
            return f"{name} does not match its hash"
    return None


def remove_stale_temporaries(folder: Path) -> None:
    """Remove checkpoints a killed process left half-written (``.step-N.tmpPID``)."""
    for temporary in folder.glob(".step-*.tmp*"):
        pid = temporary.name.rsplit(".tmp", 1)[-1]
        if pid.isdigit() and int(pid) != os.getpid() and not process_alive(int(pid)):
            shutil.rmtree(temporary, ignore_errors=True)


def checkpoint_step(path: Path) -> int:
    """The step of checkpoint folder ``step-N`` (-1 for another name)."""
    try:
        return int(path.name.removeprefix("step-"))
    except ValueError:
        return -1


def latest_checkpoint(folder: Path) -> Path | None:
    """The newest checkpoint under ``folder`` that verifies; each newer one passed over is named
    with the reason. None when there is none (the stage starts from its beginning)."""
    if not folder.is_dir():
        return None
    remove_stale_temporaries(folder)
    candidates = sorted(folder.glob("step-*"), key=checkpoint_step, reverse=True)
    for path in candidates:
        problem = verify(path)
        if problem is None:
            return path
        log.info(f"passing over checkpoint {path}: {problem}")
    if candidates:
        log.info(f"no intact checkpoint in {folder}: the stage starts from its beginning")
    return None


def read_checkpoint(path: Path) -> Resumed:
    if problem := verify(path):
        raise EmuError(f"'{path}' is not a usable training checkpoint: {problem}")
    try:
        meta = json.loads((path / STATE_JSON).read_text(encoding="utf-8"))
        tensors = load_file(path / STATE_TENSORS)
    except Exception as error:  # noqa: BLE001 - a checkpoint from before manifests, damaged
        raise EmuError(
            f"'{path}' is not a usable training checkpoint: {STATE_JSON} or {STATE_TENSORS} "
            f"cannot be read ({error})"
        ) from error
    return Resumed(meta["step"], path / "model", tensors, meta)


def restore_optimizer(optimizer: torch.optim.Optimizer, resumed: Resumed) -> None:
    optimizer.load_state_dict(_unflatten_optimizer(resumed.tensors, resumed.meta["optimizer"]))
