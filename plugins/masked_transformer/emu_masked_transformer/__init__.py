"""emu's masked-generative-transformer backend (Muse-like), shipped as a plugin exactly as a third
party would ship one. Its checkpoints open with diffusers' ``AmusedPipeline``."""

from emu_cli import hookimpl


@hookimpl
def register_backends(register):
    # Imported here so that `emu --help` does not import torch and diffusers.
    from emu_masked_transformer.backend import MaskedTransformer

    register(MaskedTransformer())
