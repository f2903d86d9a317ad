"""A small DeepFloyd IF stage I folder made with diffusers alone, as a model trained elsewhere
is: what the adoption test starts from."""

from __future__ import annotations

from pathlib import Path


def save_tiny_deepfloyd_if(folder: Path, seed: int = 0) -> Path:
    """IF stage I's classes at a tiny size, as diffusers' own IF tests build them: a T5 encoder
    32 wide, a UNet on 32 px RGB predicting epsilon and a learned variance (6 channels) with
    IF's text projection and pooled text embedding, IF's DDPM scheduler; no safety checker,
    no watermarker, no emu.json."""
    import torch
    from diffusers import DDPMScheduler, IFPipeline, UNet2DConditionModel
    from transformers import T5Config, T5EncoderModel

    from emu_cli.kit.text import offline_t5_tokenizer

    torch.manual_seed(seed)
    IFPipeline(
        tokenizer=offline_t5_tokenizer(),
        text_encoder=T5EncoderModel(T5Config(vocab_size=64, d_model=32, d_kv=16, d_ff=64,
                                             num_layers=2, num_heads=2)),
        unet=UNet2DConditionModel(sample_size=32, layers_per_block=1, block_out_channels=[16, 32],
                                  norm_num_groups=8,
                                  down_block_types=["ResnetDownsampleBlock2D",
                                                    "SimpleCrossAttnDownBlock2D"],
                                  mid_block_type="UNetMidBlock2DSimpleCrossAttn",
                                  up_block_types=["SimpleCrossAttnUpBlock2D",
                                                  "ResnetUpsampleBlock2D"],
                                  in_channels=3, out_channels=6, cross_attention_dim=32,
                                  encoder_hid_dim=32, attention_head_dim=8,
                                  addition_embed_type="text", addition_embed_type_num_heads=2,
                                  cross_attention_norm="group_norm",
                                  resnet_time_scale_shift="scale_shift", act_fn="gelu"),
        scheduler=DDPMScheduler(num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2",
                                thresholding=True, dynamic_thresholding_ratio=0.95,
                                sample_max_value=1.0, prediction_type="epsilon",
                                variance_type="learned_range"),
        safety_checker=None,
        feature_extractor=None,
        watermarker=None,
        requires_safety_checker=False,
    ).save_pretrained(folder, safe_serialization=True)  # fmt: skip
    return folder
