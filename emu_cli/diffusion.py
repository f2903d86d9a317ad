"""Training-side diffusion math shared by every diffusion backend (latent and pixel).

Keeping it here means the recipe's noise offset, prediction targets and loss weighting behave the
same for every model family.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F


def offset_noise(
    shape: torch.Size, generator: torch.Generator, noise_offset: float, dtype: torch.dtype
) -> torch.Tensor:
    """Gaussian noise plus a per-image, per-channel constant scaled by ``noise_offset``.

    The constant lets the model learn to shift a whole image's brightness, so it can make very
    dark or very bright, high-contrast pictures (the paper: 0.02 late in pre-training, 0.1 for
    quality-tuning).
    """
    device = generator.device
    noise = torch.randn(shape, generator=generator, device=device, dtype=dtype)
    if noise_offset:
        offset = torch.randn(
            shape[0], shape[1], 1, 1, generator=generator, device=device, dtype=dtype
        )
        noise = noise + noise_offset * offset
    return noise


def snr(scheduler: Any, timesteps: torch.Tensor) -> torch.Tensor:
    alphas = scheduler.alphas_cumprod.to(timesteps.device)[timesteps]
    return alphas / (1 - alphas)


def diffusion_loss(
    denoise: Any,
    clean: torch.Tensor,
    scheduler: Any,
    generator: torch.Generator,
    *,
    noise_offset: float = 0.0,
    min_snr_gamma: float = 0.0,
    **condition: Any,
) -> dict[str, torch.Tensor]:
    """DDPM training loss for ``denoise(noisy, timesteps, **condition) -> prediction``.

    The target follows ``scheduler.config.prediction_type`` (epsilon or v_prediction). With
    ``min_snr_gamma`` > 0 each sample is weighted by min(SNR, gamma) / SNR (epsilon) or
    min(SNR, gamma) / (SNR + 1) (v), the min-SNR weighting that speeds up convergence.
    """
    batch = clean.shape[0]
    noise = offset_noise(clean.shape, generator, noise_offset, clean.dtype)
    timesteps = torch.randint(
        0,
        scheduler.config.num_train_timesteps,
        (batch,),
        generator=generator,
        device=generator.device,
    ).to(clean.device)
    noise = noise.to(clean.device)
    noisy = scheduler.add_noise(clean, noise, timesteps)
    prediction_type = scheduler.config.prediction_type
    if prediction_type == "epsilon":
        target = noise
    elif prediction_type == "v_prediction":
        target = scheduler.get_velocity(clean, noise, timesteps)
    else:
        raise ValueError(f"unsupported prediction_type '{prediction_type}'")
    prediction = denoise(noisy, timesteps, **condition)
    per_sample = F.mse_loss(prediction.float(), target.float(), reduction="none").mean(
        dim=tuple(range(1, clean.ndim))
    )
    if min_snr_gamma > 0:
        ratio = snr(scheduler, timesteps)
        clipped = torch.clamp(ratio, max=min_snr_gamma)
        weights = clipped / (ratio + 1 if prediction_type == "v_prediction" else ratio)
        per_sample = per_sample * weights
    return {"loss": per_sample.mean()}
