"""Stable Diffusion XL in the latent family: two CLIP text encoders whose penultimate states are
joined, the second one's pooled and projected embedding, and the size and crop
micro-conditioning SDXL was trained with (Podell et al. 2023), here fed from each training
image's framing as diffusers' ``train_text_to_image_sdxl.py`` does. Its autoencoder and UNet
are the ones Stable Diffusion has, so the rest of the latent backend serves it unchanged."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from emu_cli.kit.diffusion import TextConditionedDenoising

if TYPE_CHECKING:
    from emu_cli import Model
    from emu_cli.data.framing import Framing

PIPELINE = "StableDiffusionXLPipeline"
# Its pipeline's flag: the unconditional half of guidance is zeros rather than the encoded
# empty prompt (SDXL base sets it; the refiner does not).
FORCE_ZEROS = "force_zeros_for_empty_prompt"


def is_xl(model: Model) -> bool:
    """A UNet under two text encoders (SD3 and Flux have a second one too, and a transformer)."""
    return "unet" in model.components and "text_encoder_2" in model.components


def load_second_encoder(path: Path) -> dict[str, Any]:
    """The components SDXL adds to a Stable Diffusion folder."""
    from transformers import CLIPTextModelWithProjection, CLIPTokenizer

    return {
        "text_encoder_2": CLIPTextModelWithProjection.from_pretrained(path / "text_encoder_2"),
        "tokenizer_2": CLIPTokenizer.from_pretrained(path / "tokenizer_2"),
    }


def pipeline_options(path: Path) -> dict[str, Any]:
    """What an SDXL folder's pipeline records besides its components, as model options."""
    index = json.loads((path / "model_index.json").read_text(encoding="utf-8"))
    return {FORCE_ZEROS: bool(index.get(FORCE_ZEROS, True))}


def pipeline(model: Model) -> Any:
    from diffusers import StableDiffusionXLPipeline

    return StableDiffusionXLPipeline(
        vae=model["vae"],
        text_encoder=model["text_encoder"],
        text_encoder_2=model["text_encoder_2"],
        tokenizer=model["tokenizer"],
        tokenizer_2=model["tokenizer_2"],
        unet=model["unet"],
        scheduler=model["scheduler"],
        force_zeros_for_empty_prompt=model.options.get(FORCE_ZEROS, True),
    )


def time_ids(framings: list[Framing] | None, images: torch.Tensor) -> torch.Tensor:
    """SDXL's six micro-conditioning numbers per image: original (height, width), crop (top,
    left), target (height, width). Without framings, an image is its own original, uncropped,
    as the pipeline assumes when it generates."""
    height, width = images.shape[-2:]
    rows = []
    for i in range(len(images)):
        if framings is None:
            rows.append([height, width, 0, 0, height, width])
            continue
        (original_width, original_height), (left, top) = framings[i].original, framings[i].crop
        rows.append([original_height, original_width, top, left, height, width])
    return torch.tensor(rows, dtype=torch.float32, device=images.device)


def text_states(model: Model, captions: list[str], device: Any) -> dict[str, torch.Tensor]:
    """What SDXL's UNet reads of ``captions``, from its two frozen encoders, as its pipeline
    computes it (its ``encode_prompt``): both encoders' penultimate states joined (``states``)
    and the second one's pooled, projected embedding (``pooled``)."""
    states, _, pooled, _ = pipeline(model).encode_prompt(
        prompt=captions, device=device, do_classifier_free_guidance=False
    )
    return {"states": states, "pooled": pooled}


class XLDenoising(TextConditionedDenoising):
    """The denoising loss with SDXL's conditioning: the text as :func:`text_states` gives it
    (both encoders frozen, run by ``encode``), its pooled embedding and the micro-conditioning
    (``time_ids``) added to the timestep embedding."""

    def __init__(self, unet: Any, *args, **kwargs):
        super().__init__(unet, None, *args, train_text_encoder=False, **kwargs)

    def condition(self, batch: dict) -> dict[str, Any]:
        return {"time_ids": batch["time_ids"]}

    def denoise(self, noisy, timesteps, states, pooled, time_ids):
        added = {"text_embeds": pooled, "time_ids": time_ids}
        return self.unet(
            noisy, timesteps, encoder_hidden_states=states, added_cond_kwargs=added
        ).sample
