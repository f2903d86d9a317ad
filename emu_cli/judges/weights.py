"""Where a judge's weights come from: a folder here, or a Hub repo fetched into the download
cache, read the same way from then on; and the published weights files that are pickles (the
LAION aesthetic head, the HPS checkpoints), opened with torch's weights-only loader, which
builds tensors and plain containers and runs no code from the file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from emu_cli.errors import EmuError
from emu_cli.files import refuse_pickles
from emu_cli.hub import HUB, HubError, explain, hub_repo


def judge_folder(source: str, patterns: list[str], judge: str) -> Path:
    """The folder ``source`` names: a path here, else ``OWNER/NAME[@REVISION]`` on the Hub,
    of which the files matching ``patterns`` are fetched (or found in the cache)."""
    if not source.startswith(HUB) and Path(source).exists():
        if not Path(source).is_dir():
            raise EmuError(f"the weights of judge '{judge}' must be a folder, got '{source}'")
        return Path(source)
    repo = hub_repo(source)
    if repo is None:
        raise EmuError(f"judge '{judge}': '{source}' is neither a folder here nor a Hub repo")
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(repo[0], revision=repo[1], allow_patterns=patterns))
    except Exception as error:  # huggingface_hub raises many types: offline, 404, network
        raise HubError(explain(error, f"the weights of judge '{judge}' ('{source}')")) from error


def hub_file(repo: str, filename: str, judge: str) -> Path:
    """One file of a Hub repo, downloaded or from the cache."""
    from huggingface_hub import hf_hub_download

    try:
        return Path(hf_hub_download(repo, filename))
    except Exception as error:  # huggingface_hub raises many types: offline, 404, network
        raise HubError(explain(error, f"'{filename}' of '{repo}' (judge '{judge}')")) from error


def state_dict(path: Path) -> dict[str, Any]:
    """The tensors of a weights file: safetensors, or a published pickle read weights-only
    (its ``state_dict`` entry where it is a training checkpoint)."""
    import torch

    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(path)
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as error:  # an UnpicklingError: the file holds more than weights
        raise EmuError(
            f"'{path}' cannot be read as weights alone ({type(error).__name__}); emu does not "
            "run code from weight files"
        ) from error
    if isinstance(loaded, dict) and isinstance(loaded.get("state_dict"), dict):
        loaded = loaded["state_dict"]
    if not isinstance(loaded, dict):
        raise EmuError(f"'{path}' holds no state dict of tensors")
    return loaded


def no_pickles_beside(folder: Path, allowed: set[str]) -> None:
    """Refuse pickles in ``folder`` other than the published weights file named in
    ``allowed`` (read by :func:`state_dict`)."""
    for path in folder.iterdir():
        if path.name not in allowed:
            refuse_pickles(path)
