"""Model sizes. ``tiny`` trains in seconds (tests), ``small`` in minutes on a CPU (32 px images,
16x16 tokens from a 256-code book), ``base`` is aMUSEd-256's shape for GPUs (32x32 tokens from
8,192 codes)."""

from __future__ import annotations

from typing import Any

from emu_cli import stage_defaults

PRESETS: dict[str, dict[str, Any]] = {
    "tiny": {
        "resolution": 16,
        "vq": {
            "block_out_channels": (16, 32),
            "layers_per_block": 1,
            "norm_num_groups": 8,
            "latent_channels": 8,
            "num_vq_embeddings": 64,
        },
        "transformer": {
            "hidden_size": 64,
            "in_channels": 32,
            "block_out_channels": 64,
            "num_res_blocks": 1,
            "block_num_heads": 2,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "intermediate_size": 128,
            "micro_cond_encode_dim": 8,
        },
        "text_encoder": {
            "hidden_size": 64,
            "intermediate_size": 128,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "projection_dim": 64,
        },
        "max_tokens": 32,
        "adversarial_weight": 0.0,
    },
    "small": {
        "resolution": 32,
        "vq": {
            # Two levels (16x16 tokens), not three (8x8): what the frozen tokenizer lets the
            # transformer draw bounds quality-tuning, and 8x8 loses most of the curated set's
            # appeal (docs/benchmarks.md, "What quality-tuning can reach").
            "block_out_channels": (32, 64),
            "layers_per_block": 1,
            "norm_num_groups": 16,
            "latent_channels": 16,
            "num_vq_embeddings": 256,
        },
        "transformer": {
            # 192 wide and 4 deep, not 256 and 6: a step costs half as much, and for the same
            # CPU time the narrower transformer names more masked tokens and quality-tunes and
            # samples in half the time (docs/results.md).
            "hidden_size": 192,
            "in_channels": 96,
            "block_out_channels": 96,
            "num_res_blocks": 1,
            "block_num_heads": 4,
            "num_hidden_layers": 4,
            "num_attention_heads": 4,
            "intermediate_size": 384,
            "micro_cond_encode_dim": 32,
            # a 2x2 convolution takes the 16x16 tokens to 8x8 for the blocks and back for the
            # logits, as aMUSEd-256 does with its 32x32 tokens
            "downsample": True,
            "upsample": True,
        },
        "text_encoder": {
            "hidden_size": 128,
            "intermediate_size": 512,
            "num_hidden_layers": 3,
            "num_attention_heads": 4,
            "projection_dim": 128,
        },
        "max_tokens": 32,
        "adversarial_weight": 0.0,
    },
    "base": {
        "resolution": 256,
        "vq": {
            "block_out_channels": (128, 256, 256, 512),
            "layers_per_block": 2,
            "norm_num_groups": 32,
            "latent_channels": 64,
            "num_vq_embeddings": 8192,
        },
        "transformer": {
            "hidden_size": 1024,
            "in_channels": 768,
            "block_out_channels": 768,
            "num_res_blocks": 3,
            "block_num_heads": 12,
            "num_hidden_layers": 22,
            "num_attention_heads": 16,
            "intermediate_size": 2816,
            "micro_cond_encode_dim": 256,
            "downsample": True,
            "upsample": True,
        },
        "text_encoder": {
            "hidden_size": 768,
            "intermediate_size": 3072,
            "num_hidden_layers": 12,
            "num_attention_heads": 12,
            "projection_dim": 768,
        },
        "max_tokens": 77,
        "adversarial_weight": 0.1,
    },
}


# Default training length per stage and preset; users override any field with --config/flags.
# No EMA for the tokenizer: dead-code restarts move codes at once, and an average would lag.
STAGE_DEFAULTS: dict[str, dict[str, dict[str, Any]]] = {
    "tokenizer": {
        "tiny": {**stage_defaults(20, 8, 1e-3, 16, 5, 0.0), "caption_dropout": 0.0},
        "small": {**stage_defaults(1500, 32, 5e-4, 32, 50, 0.0), "caption_dropout": 0.0},
        "base": {**stage_defaults(200_000, 32, 1e-4, 256, 1000, 0.0), "caption_dropout": 0.0},
    },
    "transformer": {
        "tiny": stage_defaults(30, 8, 1e-3, 16, 5, 0.99),
        "small": stage_defaults(2000, 64, 5e-4, 32, 100, 0.995),
        "base": stage_defaults(500_000, 256, 1e-4, 256, 10_000, 0.9999),
    },
}
