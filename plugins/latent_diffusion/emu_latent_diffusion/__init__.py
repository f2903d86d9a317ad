"""emu's latent-diffusion backend, shipped as a plugin exactly as a third party would ship one."""

from emu_cli import hookimpl


@hookimpl
def register_backends(register):
    # Imported here so that `emu --help` does not import torch and diffusers.
    from emu_latent_diffusion.backend import LatentDiffusion

    register(LatentDiffusion())
