"""Small Stable Diffusion, SDXL, SD3 and Flux folders made with diffusers alone, as models trained
elsewhere are: what the adoption tests and the comparison with diffusers' own training example
start from, so that they measure the same model."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def _autoencoder(**extra: Any) -> Any:
    from diffusers import AutoencoderKL

    return AutoencoderKL(block_out_channels=(16, 32), latent_channels=4, norm_num_groups=8,
                         down_block_types=("DownEncoderBlock2D",) * 2,
                         up_block_types=("UpDecoderBlock2D",) * 2, **extra)  # fmt: skip


def _text_config() -> Any:
    from transformers import CLIPTextConfig

    return CLIPTextConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                          num_attention_heads=2, projection_dim=32)  # fmt: skip


def save_tiny_stable_diffusion(folder: Path, seed: int = 0, text_config: Any = None) -> Path:
    """A plain RGB autoencoder with 4 latent channels, SD's UNet blocks without emu's pooled
    text embedding, a PNDM scheduler predicting epsilon, safety checker slots; no emu.json.
    ``text_config``: the CLIP text model's config where it is not the tiny one."""
    import torch
    from diffusers import PNDMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextModel

    from emu_cli.kit.text import offline_clip_tokenizer

    text_config = text_config or _text_config()
    torch.manual_seed(seed)
    StableDiffusionPipeline(
        vae=_autoencoder(),
        text_encoder=CLIPTextModel(text_config),
        tokenizer=offline_clip_tokenizer(),
        unet=UNet2DConditionModel(sample_size=16, block_out_channels=(32, 64),
                                  layers_per_block=1,
                                  cross_attention_dim=text_config.hidden_size,
                                  attention_head_dim=4, norm_num_groups=8,
                                  down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                                  up_block_types=("UpBlock2D", "CrossAttnUpBlock2D")),
        scheduler=PNDMScheduler(skip_prk_steps=True, steps_offset=1),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    ).save_pretrained(folder, safe_serialization=True)  # fmt: skip
    return folder


def save_tiny_stable_diffusion_xl(folder: Path, seed: int = 0) -> Path:
    """SDXL's classes at a tiny size, as diffusers' own SDXL tests build them: a CLIP text
    model and a CLIP text model with projection (32 wide each, joined to 64 for
    cross-attention), a UNet adding the pooled text and the six micro-conditioning numbers to
    its timestep embedding (6 x 8 + 32 = 80 inputs), the Euler scheduler SDXL ships with;
    no emu.json."""
    import torch
    from diffusers import EulerDiscreteScheduler, StableDiffusionXLPipeline, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    from emu_cli.kit.text import offline_clip_tokenizer

    torch.manual_seed(seed)
    StableDiffusionXLPipeline(
        vae=_autoencoder(),
        text_encoder=CLIPTextModel(_text_config()),
        text_encoder_2=CLIPTextModelWithProjection(_text_config()),
        tokenizer=offline_clip_tokenizer(),
        tokenizer_2=offline_clip_tokenizer(),
        unet=UNet2DConditionModel(sample_size=16, block_out_channels=(32, 64),
                                  layers_per_block=1, cross_attention_dim=64,
                                  attention_head_dim=4, norm_num_groups=8,
                                  use_linear_projection=True,
                                  addition_embed_type="text_time", addition_time_embed_dim=8,
                                  projection_class_embeddings_input_dim=80,
                                  down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
                                  up_block_types=("CrossAttnUpBlock2D", "UpBlock2D")),
        scheduler=EulerDiscreteScheduler(beta_start=0.00085, beta_end=0.012, steps_offset=1,
                                         beta_schedule="scaled_linear",
                                         timestep_spacing="leading"),
    ).save_pretrained(folder, safe_serialization=True)  # fmt: skip
    return folder


def save_tiny_stable_diffusion_3(folder: Path, seed: int = 0) -> Path:
    """SD3's classes at a tiny size, as diffusers' own SD3 tests build them: two CLIP text
    models with projection (32 wide, joined to 64) and a T5 encoder 64 wide, an MMDiT
    transformer on 2 x 2 patches of a 4-channel autoencoder's latents (its shift and scale
    as SD3's), the flow-matching Euler scheduler with SD3's shift of 3; no emu.json."""
    import torch
    from diffusers import (
        FlowMatchEulerDiscreteScheduler,
        SD3Transformer2DModel,
        StableDiffusion3Pipeline,
    )
    from transformers import CLIPTextModelWithProjection, T5Config, T5EncoderModel

    from emu_cli.kit.text import offline_clip_tokenizer, offline_t5_tokenizer

    torch.manual_seed(seed)
    StableDiffusion3Pipeline(
        transformer=SD3Transformer2DModel(sample_size=16, patch_size=2, in_channels=4,
                                          out_channels=4, num_layers=2, attention_head_dim=8,
                                          num_attention_heads=4, caption_projection_dim=32,
                                          joint_attention_dim=64, pooled_projection_dim=64),
        scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0),
        vae=_autoencoder(shift_factor=0.0609, scaling_factor=1.5035, use_quant_conv=False,
                         use_post_quant_conv=False),
        text_encoder=CLIPTextModelWithProjection(_text_config()),
        tokenizer=offline_clip_tokenizer(),
        text_encoder_2=CLIPTextModelWithProjection(_text_config()),
        tokenizer_2=offline_clip_tokenizer(),
        text_encoder_3=T5EncoderModel(T5Config(vocab_size=64, d_model=64, d_kv=16, d_ff=64,
                                               num_layers=2, num_heads=4)),
        tokenizer_3=offline_t5_tokenizer(),
    ).save_pretrained(folder, safe_serialization=True)  # fmt: skip
    return folder


def save_tiny_flux(folder: Path, seed: int = 0) -> Path:
    """Flux.1 dev's classes at a tiny size, as diffusers' own Flux tests build them: a CLIP
    text model (its pooled embedding) and a T5 encoder 32 wide, a transformer on 2 x 2 packs
    of a 4-channel autoencoder's latents with a guidance embedding, the flow-matching Euler
    scheduler shifting by image size as Flux's does; its transformer records the size it draws
    at (real Flux folders do not: emu then takes the pipeline's 1024 px); no emu.json."""
    import torch
    from diffusers import FlowMatchEulerDiscreteScheduler, FluxPipeline, FluxTransformer2DModel
    from transformers import CLIPTextModel, T5Config, T5EncoderModel

    from emu_cli.kit.text import offline_clip_tokenizer, offline_t5_tokenizer

    torch.manual_seed(seed)
    transformer = FluxTransformer2DModel(patch_size=1, in_channels=16, num_layers=1,
                                         num_single_layers=1, attention_head_dim=16,
                                         num_attention_heads=2, joint_attention_dim=32,
                                         pooled_projection_dim=32, axes_dims_rope=[4, 4, 8],
                                         guidance_embeds=True)  # fmt: skip
    transformer.register_to_config(sample_size=16)
    FluxPipeline(
        scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0, use_dynamic_shifting=True,
                                                  base_shift=0.5, max_shift=1.15,
                                                  base_image_seq_len=256,
                                                  max_image_seq_len=4096),
        vae=_autoencoder(shift_factor=0.1159, scaling_factor=0.3611, use_quant_conv=False,
                         use_post_quant_conv=False),
        text_encoder=CLIPTextModel(_text_config()),
        tokenizer=offline_clip_tokenizer(),
        text_encoder_2=T5EncoderModel(T5Config(vocab_size=64, d_model=32, d_kv=16, d_ff=64,
                                               num_layers=2, num_heads=2)),
        tokenizer_2=offline_t5_tokenizer(),
        transformer=transformer,
    ).save_pretrained(folder, safe_serialization=True)  # fmt: skip
    return folder
