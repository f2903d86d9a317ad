"""The denoiser stage: a text-conditioned UNet trained on latents with the shared diffusion loss."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from emu_cli.diffusion import diffusion_loss


class DenoiserTraining(nn.Module):
    def __init__(
        self,
        unet: nn.Module,
        text_encoder: nn.Module,
        scheduler: Any,
        noise_offset: float,
        train_text_encoder: bool,
    ):
        super().__init__()
        self.unet, self.text_encoder = unet, text_encoder
        self.scheduler, self.noise_offset = scheduler, noise_offset
        self.train_text_encoder = train_text_encoder

    def forward(self, batch: dict) -> dict[str, torch.Tensor]:
        with torch.set_grad_enabled(self.train_text_encoder and torch.is_grad_enabled()):
            states = self.text_encoder(batch["input_ids"])[0]
        return diffusion_loss(
            lambda noisy, t, states: self.unet(noisy, t, encoder_hidden_states=states).sample,
            batch["latents"],
            self.scheduler,
            batch["generator"],
            noise_offset=self.noise_offset,
            states=states,
        )
