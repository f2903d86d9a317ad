"""Flux.1 in the latent family: a FluxTransformer2DModel on 2 x 2 patches of a 16-channel
autoencoder's latents, trained with rectified flow; a frozen CLIP text encoder (its pooled
embedding) and a frozen T5 (its states), as its own pipeline encodes them. Training follows
diffusers' ``train_dreambooth_flux.py``: latents packed into a token sequence with their
positions, logit-normal sigmas (Flux shifts its sampler by the image's size, not in training),
the time given as a fraction, and the distilled models' guidance embedding fed a fixed scale."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch

from emu_cli.kit.diffusion import TextConditionedDenoising

if TYPE_CHECKING:
    from emu_cli import Model

PIPELINE = "FluxPipeline"
# The guidance scale the distilled models (Flux.1 dev) are told while training, as diffusers'
# example does by default; the timestep-distilled schnell has no guidance embedding.
TRAINING_GUIDANCE = 3.5
# The pipeline's default size in latents when the transformer's config records none (emu
# records the size a model was tuned at, as for every other family).
DEFAULT_GRID = 128


def is_flux(model: Model) -> bool:
    return "transformer" in model.components and "text_encoder_3" not in model.components


def pipeline(model: Model) -> Any:
    from diffusers import FluxPipeline

    names = ("scheduler", "vae", "text_encoder", "tokenizer", "text_encoder_2", "tokenizer_2",
             "transformer")  # fmt: skip
    return FluxPipeline(**{name: model[name] for name in names})


def text_states(model: Model, captions: list[str], device: Any) -> dict[str, torch.Tensor]:
    """What Flux's transformer reads of ``captions``, as its pipeline's ``encode_prompt``
    computes it: T5's states (``states``) and CLIP's pooled embedding (``pooled``)."""
    states, pooled, _ = pipeline(model).encode_prompt(prompt=captions, prompt_2=None, device=device)
    return {"states": states, "pooled": pooled}


class FluxDenoising(TextConditionedDenoising):
    """The flow-matching loss for Flux's transformer (held as ``unet``, the slot the shared loss
    calls), on latents packed into 2 x 2 patches and unpacked after, given the text as
    :func:`text_states` gives it."""

    def __init__(self, transformer: Any, *args: Any, **kwargs: Any):
        super().__init__(transformer, None, *args, train_text_encoder=False, **kwargs)

    def denoise(self, noisy, timesteps, states, pooled):
        from diffusers import FluxPipeline

        batch, channels, height, width = noisy.shape
        packed = FluxPipeline._pack_latents(noisy, batch, channels, height, width)
        positions = FluxPipeline._prepare_latent_image_ids(
            batch, height // 2, width // 2, noisy.device, noisy.dtype
        )
        guidance = None
        if self.unet.config.guidance_embeds:
            guidance = torch.full((batch,), TRAINING_GUIDANCE, device=noisy.device)
        prediction = self.unet(
            hidden_states=packed,
            timestep=timesteps / 1000,  # it scales the time by 1000 itself
            guidance=guidance,
            pooled_projections=pooled,
            encoder_hidden_states=states,
            txt_ids=torch.zeros(states.shape[1], 3, device=noisy.device, dtype=noisy.dtype),
            img_ids=positions,
        ).sample
        # _unpack_latents counts in pixels of an autoencoder scaling by 1: these are latents
        return FluxPipeline._unpack_latents(prediction, height, width, 1)
