"""Stable Diffusion 3 and 3.5 in the latent family: an MMDiT transformer (SD3Transformer2DModel)
on a 16-channel autoencoder's latents, trained with rectified flow; three frozen text encoders
(two CLIP, one T5) whose outputs its own pipeline joins. Training follows diffusers'
``train_dreambooth_sd3.py``: logit-normal sigmas, shifted as the folder's scheduler shifts
them, the velocity ``noise - latents`` as the target."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch

from emu_cli.kit.diffusion import TextConditionedDenoising

if TYPE_CHECKING:
    from emu_cli import Model

PIPELINE = "StableDiffusion3Pipeline"


def is_sd3(model: Model) -> bool:
    return "text_encoder_3" in model.components


def pipeline(model: Model) -> Any:
    from diffusers import StableDiffusion3Pipeline

    names = ("transformer", "scheduler", "vae", "text_encoder", "tokenizer", "text_encoder_2",
             "tokenizer_2", "text_encoder_3", "tokenizer_3")  # fmt: skip
    return StableDiffusion3Pipeline(**{name: model[name] for name in names})


def text_states(model: Model, captions: list[str], device: Any) -> dict[str, torch.Tensor]:
    """What SD3's transformer reads of ``captions``, as its pipeline's ``encode_prompt`` computes
    it: the CLIP encoders' penultimate states joined, padded to T5's width and followed by
    T5's states (``states``); both CLIP encoders' pooled embeddings joined (``pooled``)."""
    states, _, pooled, _ = pipeline(model).encode_prompt(
        prompt=captions,
        prompt_2=None,
        prompt_3=None,
        device=device,
        do_classifier_free_guidance=False,
    )
    return {"states": states, "pooled": pooled}


class SD3Denoising(TextConditionedDenoising):
    """The flow-matching loss for SD3's transformer (held as ``unet``, the slot the shared loss
    calls), given the text as :func:`text_states` gives it."""

    def __init__(self, transformer: Any, *args: Any, **kwargs: Any):
        super().__init__(transformer, None, *args, train_text_encoder=False, **kwargs)

    def denoise(self, noisy, timesteps, states, pooled):
        return self.unet(
            hidden_states=noisy,
            timestep=timesteps,
            encoder_hidden_states=states,
            pooled_projections=pooled,
        ).sample
