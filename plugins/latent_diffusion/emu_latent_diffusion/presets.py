"""Model sizes. ``tiny`` trains in seconds (tests), ``small`` in minutes on a CPU, ``base`` is
for GPUs. On CPU, attention stays at 16x16 and below (it is very slow above that)."""

from __future__ import annotations

from typing import Any

PRESETS: dict[str, dict[str, Any]] = {
    "tiny": {
        "resolution": 32,
        "fourier_frequencies": 2,
        "vae": {
            "block_out_channels": (16, 32, 32),
            "layers_per_block": 1,
            "norm_num_groups": 8,
            "latent_channels": 16,
            "mid_block_add_attention": False,
        },
        "unet": {
            "block_out_channels": (32, 64),
            "layers_per_block": 1,
            "norm_num_groups": 8,
            "attention_head_dim": 4,
            "down_block_types": ("CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
            "up_block_types": ("CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
        },
        "text_encoder": {
            "hidden_size": 64,
            "intermediate_size": 128,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
        },
        "max_tokens": 32,
        "adversarial_weight": 0.0,
    },
    "small": {
        "resolution": 64,
        "fourier_frequencies": 2,
        "vae": {
            "block_out_channels": (32, 64, 64),
            "layers_per_block": 1,
            "norm_num_groups": 16,
            "latent_channels": 16,
            "mid_block_add_attention": False,
        },
        "unet": {
            "block_out_channels": (64, 128, 128),
            "layers_per_block": 1,
            "norm_num_groups": 32,
            "attention_head_dim": 4,
            "down_block_types": ("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
            "up_block_types": ("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
        },
        "text_encoder": {
            "hidden_size": 128,
            "intermediate_size": 512,
            "num_hidden_layers": 3,
            "num_attention_heads": 4,
        },
        "max_tokens": 32,
        "adversarial_weight": 0.0,
    },
    "base": {
        "resolution": 256,
        "fourier_frequencies": 4,
        "vae": {
            "block_out_channels": (128, 256, 512, 512),
            "layers_per_block": 2,
            "norm_num_groups": 32,
            "latent_channels": 16,
            "mid_block_add_attention": True,
        },
        "unet": {
            "block_out_channels": (320, 640, 1280, 1280),
            "layers_per_block": 2,
            "norm_num_groups": 32,
            "attention_head_dim": 8,
            "down_block_types": (
                "CrossAttnDownBlock2D",
                "CrossAttnDownBlock2D",
                "CrossAttnDownBlock2D",
                "DownBlock2D",
            ),
            "up_block_types": (
                "UpBlock2D",
                "CrossAttnUpBlock2D",
                "CrossAttnUpBlock2D",
                "CrossAttnUpBlock2D",
            ),
        },
        "text_encoder": {
            "hidden_size": 768,
            "intermediate_size": 3072,
            "num_hidden_layers": 12,
            "num_attention_heads": 12,
        },
        "max_tokens": 77,
        "adversarial_weight": 0.1,
    },
}

# Default training length per stage and preset; users override any field with --config/flags.
STAGE_DEFAULTS: dict[str, dict[str, dict[str, Any]]] = {
    "autoencoder": {
        "tiny": {
            "steps": 60,
            "batch_size": 16,
            "learning_rate": 1e-3,
            "resolution": 32,
            "warmup_steps": 10,
            "ema_decay": 0.0,
            "caption_dropout": 0.0,
        },
        "small": {
            "steps": 1500,
            "batch_size": 32,
            "learning_rate": 5e-4,
            "resolution": 64,
            "warmup_steps": 50,
            "ema_decay": 0.0,
            "caption_dropout": 0.0,
        },
        "base": {
            "steps": 200_000,
            "batch_size": 32,
            "learning_rate": 1e-4,
            "resolution": 256,
            "warmup_steps": 1000,
            "ema_decay": 0.999,
            "caption_dropout": 0.0,
        },
    },
    "denoiser": {
        "tiny": {
            "steps": 60,
            "batch_size": 16,
            "learning_rate": 1e-3,
            "resolution": 32,
            "warmup_steps": 10,
            "ema_decay": 0.99,
        },
        "small": {
            "steps": 4000,
            "batch_size": 32,
            "learning_rate": 5e-4,
            "resolution": 64,
            "warmup_steps": 100,
            "ema_decay": 0.999,
        },
        # Resolution raised progressively as the paper pre-trains; noise offset 0.02 is for
        # the final stage and is set by the user's config there.
        "base": {
            "steps": 500_000,
            "batch_size": 64,
            "learning_rate": 1e-4,
            "resolution": 256,
            "resolution_schedule": [[128, 200_000], [256, 300_000]],
            "warmup_steps": 10_000,
            "ema_decay": 0.9999,
        },
    },
}
