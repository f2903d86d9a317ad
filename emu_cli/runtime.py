"""Process-wide settings for commands that run models."""

from __future__ import annotations


def quiet_libraries() -> None:
    """Keep diffusers' and transformers' own progress bars and info logs out of emu's output;
    their warnings and errors still show."""
    import diffusers
    import transformers

    diffusers.utils.logging.set_verbosity_warning()
    diffusers.utils.logging.disable_progress_bar()
    transformers.utils.logging.set_verbosity_warning()
    transformers.utils.logging.disable_progress_bar()
