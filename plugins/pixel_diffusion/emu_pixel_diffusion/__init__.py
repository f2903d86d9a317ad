"""emu's pixel-diffusion backend (Imagen-like), shipped as a plugin exactly as a third party
would ship one. ``PixelDiffusionPipeline.from_pretrained(folder)`` generates without emu."""

from emu_cli import hookimpl


@hookimpl
def register_backends(register):
    # Imported here so that `emu --help` does not import torch and diffusers.
    from emu_pixel_diffusion.backend import PixelDiffusion

    register(PixelDiffusion())


def __getattr__(name: str):
    if name == "PixelDiffusionPipeline":
        from emu_pixel_diffusion.pipeline import PixelDiffusionPipeline

        return PixelDiffusionPipeline
    raise AttributeError(name)
