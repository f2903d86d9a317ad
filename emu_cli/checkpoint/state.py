"""Training state for resume, written atomically and without pickle.

A checkpoint is a folder ``step-NNNNNNNN/`` holding the model (the backend's own folder format),
``state.safetensors`` (optimizer moments, EMA weights, RNG states) and ``state.json`` (step,
scheduler, optimizer hyper-parameters). It is written to a temporary folder and renamed into
place, then ``latest`` is replaced, so a kill at any moment leaves the previous checkpoint whole.
"""

from __future__ import annotations

import json
import os
import random
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from emu_cli.files import write_atomic

STATE_TENSORS = "state.safetensors"
STATE_JSON = "state.json"
LATEST = "latest"


def _flatten_optimizer(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    state = optimizer.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for index, values in state["state"].items():
        for key, value in values.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optimizer.{index}.{key}"] = value.detach().cpu().contiguous()
            else:
                scalars.setdefault(str(index), {})[key] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def _unflatten_optimizer(tensors: dict[str, torch.Tensor], meta: dict) -> dict:
    state: dict[int, dict[str, Any]] = {}
    for name, value in tensors.items():
        if name.startswith("optimizer."):
            _, index, key = name.split(".", 2)
            state.setdefault(int(index), {})[key] = value
    for index, values in meta["scalars"].items():
        state.setdefault(int(index), {}).update(values)
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
    """Write checkpoint ``step`` under ``folder`` atomically; keep the newest ``keep``."""
    folder.mkdir(parents=True, exist_ok=True)
    final = folder / f"step-{step:08d}"
    temporary = folder / f".step-{step:08d}.tmp{os.getpid()}"
    shutil.rmtree(temporary, ignore_errors=True)
    temporary.mkdir()
    save_model(temporary / "model")
    optimizer_tensors, optimizer_meta = _flatten_optimizer(optimizer)
    save_file({**optimizer_tensors, **extra_tensors, **rng_tensors()}, temporary / STATE_TENSORS)
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
    if final.exists():
        shutil.rmtree(final)
    os.replace(temporary, final)
    write_atomic(folder / LATEST, final.name)
    for old in sorted(folder.glob("step-*"))[:-keep] if keep > 0 else []:
        shutil.rmtree(old, ignore_errors=True)
    return final


def latest_checkpoint(folder: Path) -> Path | None:
    pointer = folder / LATEST
    if not pointer.is_file():
        return None
    path = folder / pointer.read_text(encoding="utf-8").strip()
    return path if (path / STATE_JSON).is_file() else None


def read_checkpoint(path: Path) -> Resumed:
    if not (path / STATE_JSON).is_file() or not (path / STATE_TENSORS).is_file():
        raise ValueError(f"'{path}' is not a training checkpoint (no {STATE_JSON}/{STATE_TENSORS})")
    meta = json.loads((path / STATE_JSON).read_text(encoding="utf-8"))
    return Resumed(meta["step"], path / "model", load_file(path / STATE_TENSORS), meta)


def restore_optimizer(optimizer: torch.optim.Optimizer, resumed: Resumed) -> None:
    optimizer.load_state_dict(_unflatten_optimizer(resumed.tensors, resumed.meta["optimizer"]))
