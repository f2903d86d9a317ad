"""DeepFloyd IF in the pixel family: its stage I, a UNet denoising 64 px RGB pixels under a
frozen T5-XXL, the base model whose appeal quality-tuning lifts (its super-resolution stages
are separate folders, IFSuperResolutionPipeline, used as they are). Training follows diffusers'
``train_dreambooth.py`` for IF: an epsilon target on the DDPM schedule of the folder's
scheduler, the UNet's learned-variance channels (it predicts 6) left out of the loss."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch

from emu_cli.kit.diffusion import TextConditionedDenoising

if TYPE_CHECKING:
    from emu_cli import Model

PIPELINE = "IFPipeline"


def is_if(model: Model) -> bool:
    return model.options.get("pipeline") == PIPELINE


def pipeline(model: Model) -> Any:
    from diffusers import IFPipeline

    return IFPipeline(
        tokenizer=model["tokenizer"],
        text_encoder=model["text_encoder"],
        unet=model["unet"],
        scheduler=model["scheduler"],
        safety_checker=None,
        feature_extractor=None,
        watermarker=None,
        requires_safety_checker=False,
    )


def text_states(model: Model, captions: list[str], device: Any) -> dict[str, torch.Tensor]:
    """T5's states for ``captions`` as IF's pipeline computes them (its attention mask, 77
    tokens), without its caption cleaning (which needs packages IF's pipeline does not
    install)."""
    states, _ = pipeline(model).encode_prompt(
        captions, do_classifier_free_guidance=False, device=device, clean_caption=False
    )
    return {"states": states}


class IFDenoising(TextConditionedDenoising):
    """The epsilon loss for IF's UNet, its predicted variance (the second half of its output
    channels when it learns one) not trained, as in diffusers' example. T5 is frozen: its
    states come in the batch."""

    def denoise(self, noisy, timesteps, states):
        prediction = super().denoise(noisy, timesteps, states)
        return prediction[:, : noisy.shape[1]]
