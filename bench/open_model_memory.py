"""Full quality-tuning steps of an open model's denoiser at its real size (random weights):
peak memory and images/s, with emu's own training pieces (the family's loss, optimizer, EMA,
gradient checkpointing, bf16 autocast). The text encoders and autoencoder are not built: during
quality-tuning's steps they are out of memory (their outputs cached), so the batch holds cached
encodings of the real shapes.

    python bench/open_model_memory.py --family sdxl --device cuda --batch-size 4
    python bench/open_model_memory.py --family flux --device cuda --batch-size 1 \\
        --optimizer adamw8bit --no-ema --gradient-checkpointing
    python bench/open_model_memory.py --family flux --size tiny --device cpu   # on a CPU

`bench/gpu_check.sh` runs the two GPU lines; figures in docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

import torch

# The denoisers as published (stabilityai/stable-diffusion-xl-base-1.0's unet/config.json,
# black-forest-labs/FLUX.1-dev's transformer/config.json), and tiny ones of the same classes.
SDXL_UNET = {
    "sample_size": 128, "in_channels": 4, "out_channels": 4, "layers_per_block": 2,
    "block_out_channels": (320, 640, 1280), "transformer_layers_per_block": (1, 2, 10),
    "attention_head_dim": (5, 10, 20), "cross_attention_dim": 2048,
    "down_block_types": ("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
    "up_block_types": ("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
    "addition_embed_type": "text_time", "addition_time_embed_dim": 256,
    "projection_class_embeddings_input_dim": 2816, "use_linear_projection": True,
}  # fmt: skip
TINY_SDXL_UNET = {
    "sample_size": 16, "in_channels": 4, "out_channels": 4, "layers_per_block": 1,
    "block_out_channels": (32, 64), "attention_head_dim": 4, "cross_attention_dim": 64,
    "norm_num_groups": 8, "down_block_types": ("DownBlock2D", "CrossAttnDownBlock2D"),
    "up_block_types": ("CrossAttnUpBlock2D", "UpBlock2D"), "addition_embed_type": "text_time",
    "addition_time_embed_dim": 8, "projection_class_embeddings_input_dim": 80,
    "use_linear_projection": True,
}  # fmt: skip
FLUX_DEV = {"guidance_embeds": True}  # the class's defaults are Flux.1's sizes
TINY_FLUX = {
    "in_channels": 16, "num_layers": 1, "num_single_layers": 1, "attention_head_dim": 16,
    "num_attention_heads": 2, "joint_attention_dim": 32, "pooled_projection_dim": 32,
    "axes_dims_rope": (4, 4, 8), "guidance_embeds": True,
}  # fmt: skip


def build(family: str, size: str, device: torch.device) -> tuple[Any, Any, dict[str, Any]]:
    """(denoiser, the family's training module, a batch of cached encodings' shapes)."""
    from diffusers import (
        DDPMScheduler,
        FlowMatchEulerDiscreteScheduler,
        FluxTransformer2DModel,
        UNet2DConditionModel,
    )
    from emu_latent_diffusion.flux import FluxDenoising
    from emu_latent_diffusion.xl import XLDenoising

    real = size == "real"
    with torch.device(device):
        if family == "sdxl":
            unet = UNet2DConditionModel(**(SDXL_UNET if real else TINY_SDXL_UNET))
            schedule = DDPMScheduler(beta_schedule="scaled_linear", beta_start=0.00085,
                                     beta_end=0.012)  # fmt: skip
            module = XLDenoising(unet, schedule, key="latents", noise_offset=0.1)
            width, pooled, tokens, channels = (2048, 1280, 77, 4) if real else (64, 32, 77, 4)
            encodings = {"time_ids": (6,)}
            denoiser = unet
        else:
            denoiser = FluxTransformer2DModel(**(FLUX_DEV if real else TINY_FLUX))
            schedule = FlowMatchEulerDiscreteScheduler(use_dynamic_shifting=True)
            module = FluxDenoising(denoiser, schedule, key="latents", noise_offset=0.1)
            width, pooled, tokens, channels = (4096, 768, 512, 16) if real else (32, 32, 16, 4)
            encodings = {}
    side = 128 if real else 16  # latents of a 1024 px image
    shapes = {"latents": (channels, side, side), "states": (tokens, width), "pooled": (pooled,)}
    return denoiser, module, shapes | encodings


def main() -> None:
    from emu_cli.training.ema import EMA
    from emu_cli.training.recipe import Recipe
    from emu_cli.training.trainer import checkpoint_activations, optimizer_class

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--family", choices=("sdxl", "flux"), required=True)
    parser.add_argument("--size", choices=("real", "tiny"), default="real")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--optimizer", choices=("adamw", "adamw8bit"), default="adamw")
    parser.add_argument("--no-ema", action="store_true")
    parser.add_argument("--gradient-checkpointing", action="store_true")
    parser.add_argument("--json", help="write the figures here too")
    args = parser.parse_args()
    device = torch.device(args.device)
    denoiser, module, shapes = build(args.family, args.size, device)
    parameters = [p for p in denoiser.parameters() if p.requires_grad]
    if args.gradient_checkpointing:
        checkpoint_activations(module, args.family)
    recipe = Recipe(optimizer=args.optimizer)
    optimizer = optimizer_class(recipe)(parameters, lr=1e-5, weight_decay=0.01)
    ema = None if args.no_ema else EMA(parameters, 0.999)
    batch = {name: torch.randn(args.batch_size, *shape, device=device)
             for name, shape in shapes.items()}  # fmt: skip
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    times = []
    for step in range(args.steps + 2):  # two warm-up steps, untimed
        started = time.perf_counter()
        generator = torch.Generator(device).manual_seed(step)
        with torch.autocast(device.type, dtype=torch.bfloat16):
            loss = module({**batch, "generator": generator})["loss"]
        loss.backward()
        torch.nn.utils.clip_grad_norm_(parameters, 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if ema is not None:
            ema.update()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        if step >= 2:
            times.append(time.perf_counter() - started)
    figures = {
        "family": args.family,
        "size": args.size,
        "parameters": sum(p.numel() for p in parameters),
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "batch_size": args.batch_size,
        "optimizer": args.optimizer,
        "ema": ema is not None,
        "gradient_checkpointing": args.gradient_checkpointing,
        "images_per_second": args.batch_size * len(times) / sum(times),
        "peak_memory_gib": (
            torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None
        ),
        "loss": loss.item(),
    }
    print(json.dumps(figures))
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(figures, handle, indent=2)


if __name__ == "__main__":
    main()
