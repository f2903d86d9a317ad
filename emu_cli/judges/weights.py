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


def with_prefix(tensors: dict[str, Any], prefix: str) -> dict[str, Any]:
    """The tensors under ``prefix``, named without it (one part of a whole model's file)."""
    return {k.removeprefix(prefix): v for k, v in tensors.items() if k.startswith(prefix)}


def fill(module: Any, tensors: dict[str, Any], what: str, *, assign: bool = False) -> None:
    """Every weight of ``module`` from ``tensors`` (``assign``: take them as they are, for a
    module built on the meta device); tensors it has no place for (buffers a file also keeps)
    are ignored, a missing or misshapen one is refused, naming ``what`` was read."""
    try:
        missing, _ = module.load_state_dict(tensors, strict=False, assign=assign)
    except RuntimeError as error:  # a tensor of another shape
        raise EmuError(f"{what} does not fit: {error}") from error
    if missing:
        more = f" and {len(missing) - 3} more" if len(missing) > 3 else ""
        raise EmuError(f"{what} does not fit: no {', '.join(missing[:3])}{more}")
