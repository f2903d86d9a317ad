"""Model checkpoints: a diffusers-style folder written by the backend, plus ``emu.json`` (the
:class:`~emu_cli.checkpoint.provenance.Provenance` record). Weights are safetensors only:
folders holding pickled weights are refused. A checkpoint is named by its folder or, once
pushed, by its Hub repo (:func:`locate_checkpoint`).
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from emu_cli.checkpoint.provenance import PROVENANCE, CheckpointError, Provenance
from emu_cli.errors import EmuError
from emu_cli.files import refuse_pickles
from emu_cli.plugin.backend import Backend, Model
from emu_cli.version import __version__


@dataclass(frozen=True)
class Located:
    """Where a named checkpoint is on disk, and the name to record for it: the folder as given,
    or ``OWNER/NAME@COMMIT`` for a Hub repo (``repo``), pinned to the commit that was read."""

    path: Path
    name: str
    repo: str | None = None


def locate_checkpoint(reference: str | Path) -> Located:
    """A checkpoint folder, or a Hub model repo (``OWNER/NAME[@REVISION]``, also with open_clip's
    ``hf-hub:`` prefix) downloaded into huggingface_hub's cache. A folder of that name wins, as
    in diffusers' ``from_pretrained``."""
    from emu_cli.hub import folder_or_repo

    text = str(reference)
    folder, repo = folder_or_repo(text, "model", f"no checkpoint folder '{text}' here")
    if repo is None:  # a path ("runs/pre/" and "runs/pre" are one): read_provenance checks it
        return Located(folder, str(folder))
    return Located(folder, f"{repo}@{folder.name}", repo)


def read_provenance(path: Path) -> Provenance:
    path = Path(path)
    if not path.is_dir():
        raise CheckpointError(f"checkpoint '{path}' does not exist or is not a folder")
    provenance = path / PROVENANCE
    if not provenance.is_file():
        if (path / "model_index.json").is_file():
            raise CheckpointError(
                f"'{path}' is a diffusers {_pipeline_class(path)} folder but not an emu checkpoint "
                f"(no {PROVENANCE}), which this needs: its record of how the model was made"
            )
        raise CheckpointError(f"'{path}' is not an emu checkpoint (no {PROVENANCE})")
    return Provenance.read(path)


def checkpoint_provenance(path: Path) -> Provenance:
    """``emu.json``; for a diffusers folder without one, what the installed backend that loads
    its pipeline class infers from its configs (:meth:`Backend.adopt`), marked ``adopted``."""
    from emu_cli.plugin.registry import get_backends

    path = Path(path)
    if (path / PROVENANCE).is_file() or not (path / "model_index.json").is_file():
        return read_provenance(path)
    pipeline = _pipeline_class(path)
    for backend in get_backends().values():
        adopted = backend.adopt(path, pipeline)
        if adopted is not None:
            record = {**adopted, "backend": backend.name, "adopted": pipeline}
            return Provenance.from_dict(record, where=f"what '{backend.name}' adopts of '{path}'")
    raise CheckpointError(
        f"'{path}' is a diffusers {pipeline} folder without {PROVENANCE}, and no installed "
        f"backend adopts a {pipeline} made elsewhere (`emu backends` lists them)"
    )


def _pipeline_class(path: Path) -> str:
    """The pipeline a diffusers folder names, for messages; "pipeline" where it names none."""
    try:
        index = json.loads((path / "model_index.json").read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError):
        return "pipeline"
    return str(index.get("_class_name") or "pipeline") if isinstance(index, dict) else "pipeline"


def save_checkpoint(backend: Backend, model: Model, path: Path, provenance: Provenance) -> Path:
    """Write the model and its provenance into folder ``path``, keeping what else is there.

    A run folder also holds logs and resumable state (``stages/``), so the model's entries are
    swapped in one by one and ``emu.json`` is written last: until it is, the folder is not a
    checkpoint, so a crash midway can never leave a mixed model that claims to be whole.
    Entries the previous model listed in its manifest and the new one lacks are removed.
    """
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    previous = set()
    if (path / PROVENANCE).is_file():
        previous = set(Provenance.read(path).files)
    incoming = path / f".incoming.tmp{os.getpid()}"
    shutil.rmtree(incoming, ignore_errors=True)
    write_model(backend, model, incoming, provenance)
    (path / PROVENANCE).unlink(missing_ok=True)
    entries = [e.name for e in incoming.iterdir() if e.name != PROVENANCE]
    for name in sorted(previous - set(entries)):
        _remove(path / name)
    for name in entries:
        _remove(path / name)
        os.replace(incoming / name, path / name)
    os.replace(incoming / PROVENANCE, path / PROVENANCE)
    shutil.rmtree(incoming, ignore_errors=True)
    return path


def _remove(target: Path) -> None:
    if target.is_dir() and not target.is_symlink():
        shutil.rmtree(target)
    elif target.exists() or target.is_symlink():
        target.unlink()


def write_model(backend: Backend, model: Model, path: Path, provenance: Provenance) -> None:
    """Write a checkpoint folder in place (callers that need atomicity write to a temp path)."""
    backend.save(model, path)
    provenance.with_changes(
        files=sorted(e.name for e in Path(path).iterdir()),
        backend=backend.name,
        options=model.options,
        emu_version=__version__,
        saved_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    ).write(path)


def load_checkpoint(
    path: Path, backend: Backend | None = None
) -> tuple[Backend, Model, Provenance]:
    """Load a checkpoint with the backend its ``emu.json`` names."""
    from emu_cli.plugin.registry import get_backend

    path = Path(path)
    provenance = checkpoint_provenance(path)
    try:
        refuse_pickles(path)
    except EmuError as error:
        raise CheckpointError(str(error)) from None
    backend = backend or get_backend(provenance.backend)
    if backend.name != provenance.backend:
        raise CheckpointError(
            f"'{path}' is a '{provenance.backend}' checkpoint, not a '{backend.name}' one"
        )
    try:
        model = backend.load(path)
    except (OSError, KeyError, RuntimeError) as error:
        raise CheckpointError(
            f"'{path}' could not be loaded as a {backend.name} model: {error}"
        ) from error
    model.options = {**provenance.options, **model.options}
    return backend, model, provenance
