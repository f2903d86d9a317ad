"""Process-wide settings for commands that run models, and where they run."""

from __future__ import annotations

from typing import TYPE_CHECKING

from emu_cli.errors import EmuError

if TYPE_CHECKING:
    import torch


def resolve_device(device: str) -> torch.device:
    """``--device auto|cpu|cuda`` as a torch device: auto is CUDA where there is one."""
    import torch

    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise EmuError("--device cuda was asked for but no CUDA device is available")
    return torch.device(device)


def quiet_libraries() -> None:
    """Keep diffusers' and transformers' own progress bars and info logs out of emu's output;
    their warnings and errors still show."""
    import diffusers
    import transformers

    diffusers.utils.logging.set_verbosity_warning()
    diffusers.utils.logging.disable_progress_bar()
    transformers.utils.logging.set_verbosity_warning()
    transformers.utils.logging.disable_progress_bar()
