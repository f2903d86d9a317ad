"""The super-resolution stage: a UNet denoising the high-resolution image given the upsampled
low-resolution one (concatenated as extra input channels) and the amount of noise that
augmented it (as its class embedding), as Imagen's cascade trains its upsamplers."""

from __future__ import annotations

from typing import Any

import torch

from emu_cli.kit.diffusion import TextConditionedDenoising
from emu_pixel_diffusion.pipeline import noise_augment


class SuperResolutionDenoising(TextConditionedDenoising):
    def __init__(self, *args: Any, max_augmentation: int, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.max_augmentation = max_augmentation

    def condition(self, batch: dict) -> dict[str, Any]:
        low, generator = batch["low"], batch["generator"]
        levels = torch.randint(
            0, self.max_augmentation, (low.shape[0],), generator=generator, device=generator.device
        ).to(low.device)
        noise = torch.randn(low.shape, generator=generator, device=generator.device)
        augmented = noise_augment(low, noise.to(low.device), levels, self.scheduler.alphas_cumprod)
        return {"low": augmented, "levels": levels}

    def denoise(self, noisy, timesteps, states, low, levels):
        inputs = torch.cat([noisy, low], dim=1)
        output = self.unet(inputs, timesteps, encoder_hidden_states=states, class_labels=levels)
        return output.sample
