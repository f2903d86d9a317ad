"""Model sizes. ``tiny`` trains in seconds (tests, with a 2x super-resolution stage so that it is
tested too), ``small`` in minutes on a CPU (32 px, no super-resolution unless asked for), ``base``
is Imagen's cascade at GPU scale (64 px base, 4x super-resolution to 256 px). On CPU, attention
stays at 16x16 and below: it is very slow above that."""

from __future__ import annotations

from typing import Any

from emu_cli import stage_defaults

# diffusers' UNet2DConditionModel reads ``attention_head_dim`` as the number of heads (a legacy
# name). Attention at the lower resolutions only, as Imagen's efficient UNet does.
_TWO_LEVELS = {
    "down_block_types": ("DownBlock2D", "CrossAttnDownBlock2D"),
    "up_block_types": ("CrossAttnUpBlock2D", "UpBlock2D"),
}

# Attention at 8x8 only: attention at 16x16 as well, or twice the width, cost a third to half
# of the throughput on 2 cores (docs/backends.md, "pixel").
_SMALL_UNET = {
    "block_out_channels": (32, 64, 128),
    "layers_per_block": 1,
    "norm_num_groups": 16,
    "attention_head_dim": 4,
    "down_block_types": ("DownBlock2D", "DownBlock2D", "CrossAttnDownBlock2D"),
    "up_block_types": ("CrossAttnUpBlock2D", "UpBlock2D", "UpBlock2D"),
}

PRESETS: dict[str, dict[str, Any]] = {
    "tiny": {
        "resolution": 16,
        "unet": {
            "block_out_channels": (32, 64),
            "layers_per_block": 1,
            "norm_num_groups": 8,
            "attention_head_dim": 2,
            **_TWO_LEVELS,
        },
        "superres_factor": 2,
        "superres_unet": {
            "block_out_channels": (32, 64),
            "layers_per_block": 1,
            "norm_num_groups": 8,
            "attention_head_dim": 2,
            **_TWO_LEVELS,
        },
        "text_encoder": {
            "hidden_size": 64,
            "intermediate_size": 128,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
        },
        "t5_encoder": {"d_model": 64, "d_ff": 128, "d_kv": 32, "num_layers": 2, "num_heads": 2},
        "max_tokens": 32,
    },
    "small": {
        "resolution": 32,
        "unet": _SMALL_UNET,
        "superres_factor": 1,  # off on CPU; superres_factor=2 adds a 64 px stage
        "superres_unet": _SMALL_UNET,
        "text_encoder": {
            "hidden_size": 128,
            "intermediate_size": 512,
            "num_hidden_layers": 3,
            "num_attention_heads": 4,
        },
        "t5_encoder": {"d_model": 128, "d_ff": 512, "d_kv": 32, "num_layers": 3, "num_heads": 4},
        "max_tokens": 32,
    },
    "base": {
        "resolution": 64,
        "unet": {
            "block_out_channels": (256, 512, 768, 1024),
            "layers_per_block": 3,
            "norm_num_groups": 32,
            "attention_head_dim": 8,
            "down_block_types": (
                "DownBlock2D",
                "CrossAttnDownBlock2D",
                "CrossAttnDownBlock2D",
                "CrossAttnDownBlock2D",
            ),
            "up_block_types": (
                "CrossAttnUpBlock2D",
                "CrossAttnUpBlock2D",
                "CrossAttnUpBlock2D",
                "UpBlock2D",
            ),
        },
        "superres_factor": 4,
        "superres_unet": {
            "block_out_channels": (128, 256, 512, 1024),
            "layers_per_block": 2,
            "norm_num_groups": 32,
            "attention_head_dim": 8,
            "down_block_types": ("DownBlock2D",) * 3 + ("CrossAttnDownBlock2D",),
            "up_block_types": ("CrossAttnUpBlock2D",) + ("UpBlock2D",) * 3,
        },
        "text_encoder": {
            "hidden_size": 768,
            "intermediate_size": 3072,
            "num_hidden_layers": 12,
            "num_attention_heads": 12,
        },
        "t5_encoder": {"d_model": 768, "d_ff": 2048, "d_kv": 64, "num_layers": 12, "num_heads": 12},
        "max_tokens": 77,
    },
}


# Default training length per stage and preset; users override any field with --config/flags.
# The super-resolution stage trains at the base resolution times the preset's factor.
STAGE_DEFAULTS: dict[str, dict[str, dict[str, Any]]] = {
    "denoiser": {
        "tiny": stage_defaults(40, 16, 1e-3, 16, 5, 0.99),
        "small": stage_defaults(2000, 32, 1e-3, 32, 100, 0.995),
        "base": stage_defaults(500_000, 256, 1e-4, 64, 10_000, 0.9999),
    },
    "superres": {
        "tiny": stage_defaults(20, 8, 1e-3, 32, 5, 0.99),
        "small": stage_defaults(2000, 32, 5e-4, 64, 100, 0.999),
        "base": stage_defaults(300_000, 64, 1e-4, 256, 10_000, 0.9999),
    },
}
