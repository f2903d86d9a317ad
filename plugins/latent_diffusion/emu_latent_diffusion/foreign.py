"""A small Stable Diffusion folder made with diffusers alone, as a model trained elsewhere is:
what the adoption tests and the comparison with diffusers' own training example both start
from, so that they measure the same model."""

from __future__ import annotations

from pathlib import Path


def save_tiny_stable_diffusion(folder: Path, seed: int = 0) -> Path:
    """A plain RGB autoencoder with 4 latent channels, SD's UNet blocks without emu's pooled
    text embedding, a PNDM scheduler predicting epsilon, safety checker slots; no emu.json."""
    import torch
    from diffusers import (
        AutoencoderKL,
        PNDMScheduler,
        StableDiffusionPipeline,
        UNet2DConditionModel,  # fmt: skip
    )
    from transformers import CLIPTextConfig, CLIPTextModel

    from emu_cli.kit.text import offline_clip_tokenizer

    torch.manual_seed(seed)
    StableDiffusionPipeline(
        vae=AutoencoderKL(block_out_channels=(16, 32), latent_channels=4, norm_num_groups=8,
                          down_block_types=("DownEncoderBlock2D",) * 2,
                          up_block_types=("UpDecoderBlock2D",) * 2),
        text_encoder=CLIPTextModel(CLIPTextConfig(hidden_size=32, intermediate_size=64,
                                                  num_hidden_layers=2, num_attention_heads=2)),
        tokenizer=offline_clip_tokenizer(),
        unet=UNet2DConditionModel(sample_size=16, block_out_channels=(32, 64),
                                  layers_per_block=1, cross_attention_dim=32,
                                  attention_head_dim=4, norm_num_groups=8,
                                  down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                                  up_block_types=("UpBlock2D", "CrossAttnUpBlock2D")),
        scheduler=PNDMScheduler(skip_prk_steps=True, steps_offset=1),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    ).save_pretrained(folder, safe_serialization=True)  # fmt: skip
    return folder
