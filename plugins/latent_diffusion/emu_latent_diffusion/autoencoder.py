"""The autoencoder stage: Emu's improvements on the usual 4-channel AutoencoderKL.

- more latent channels (16 by default) reconstruct fine detail better;
- a non-learnable Fourier-feature lift of the RGB input before the encoder;
- an optional small adversarial loss from a patch discriminator.

The lift is applied outside the diffusers model, so the saved ``vae/`` is a plain
``AutoencoderKL`` whose decoder ``StableDiffusionPipeline`` uses as is.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from emu_cli.kit.reconstruction import adversarial_losses


def fourier_lift(images: torch.Tensor, frequencies: int) -> torch.Tensor:
    """RGB in [-1, 1] to [rgb, sin(2^k pi x), cos(2^k pi x) for k < F]: 3 + 6F channels."""
    if frequencies == 0:
        return images
    features = [images]
    for k in range(frequencies):
        angle = (2.0**k) * math.pi * images
        features += [torch.sin(angle), torch.cos(angle)]
    return torch.cat(features, dim=1)


def lifted_channels(frequencies: int) -> int:
    return 3 + 6 * frequencies


class AutoencoderTraining(nn.Module):
    """forward(batch) -> loss: L1 reconstruction + KL, and optionally hinge-GAN terms.

    With a discriminator, both players train from one optimizer and one backward pass (see
    :func:`emu_cli.kit.reconstruction.adversarial_losses`).
    """

    def __init__(
        self,
        vae: nn.Module,
        frequencies: int,
        kl_weight: float = 1e-6,
        discriminator: nn.Module | None = None,
        adversarial_weight: float = 0.0,
    ):
        super().__init__()
        self.vae = vae
        self.discriminator = discriminator
        self.frequencies = frequencies
        self.kl_weight = kl_weight
        self.adversarial_weight = adversarial_weight

    def forward(self, batch: dict) -> dict[str, torch.Tensor]:
        images = batch["pixels"]
        posterior = self.vae.encode(fourier_lift(images, self.frequencies)).latent_dist
        latents = posterior.sample(generator=batch["generator"])
        reconstruction = self.vae.decode(latents).sample
        reconstruction_loss = F.l1_loss(reconstruction, images)
        kl = posterior.kl().mean()
        loss = reconstruction_loss + self.kl_weight * kl
        outputs = {"reconstruction": reconstruction_loss.detach(), "kl": kl.detach()}
        if self.discriminator is not None and self.adversarial_weight > 0:
            discriminator_loss, generator_loss = adversarial_losses(
                self.discriminator, images, reconstruction
            )
            loss = loss + discriminator_loss + self.adversarial_weight * generator_loss
            outputs |= {
                "discriminator": discriminator_loss.detach(),
                "adversarial": generator_loss.detach(),
            }
        return {"loss": loss, **outputs}
