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
from torch.func import functional_call


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


class PatchDiscriminator(nn.Module):
    """A small PatchGAN: real/fake logits per patch."""

    def __init__(self, channels: int = 32, layers: int = 3):
        super().__init__()
        blocks: list[nn.Module] = [nn.Conv2d(3, channels, 4, 2, 1), nn.LeakyReLU(0.2)]
        width = channels
        for _ in range(layers - 1):
            blocks += [
                nn.Conv2d(width, width * 2, 4, 2, 1),
                nn.GroupNorm(8, width * 2),
                nn.LeakyReLU(0.2),
            ]
            width *= 2
        blocks.append(nn.Conv2d(width, 1, 3, 1, 1))
        self.net = nn.Sequential(*blocks)
        self.config = {"channels": channels, "layers": layers}

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.net(images)


def psnr(reconstruction: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
    """Peak signal-to-noise ratio in dB for images in [-1, 1], per image."""
    error = ((reconstruction.clamp(-1, 1) - images) / 2).pow(2).mean(dim=(1, 2, 3))
    return -10 * torch.log10(error.clamp_min(1e-10))


class AutoencoderTraining(nn.Module):
    """forward(batch) -> loss: L1 reconstruction + KL, and optionally hinge-GAN terms.

    With a discriminator, both players train from one optimizer and one backward pass: the
    discriminator sees detached reconstructions, and the autoencoder's adversarial term goes
    through a copy of the discriminator's weights that carries no gradient back to them.
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
            real = self.discriminator(images)
            fake = self.discriminator(reconstruction.detach())
            discriminator_loss = F.relu(1 - real).mean() + F.relu(1 + fake).mean()
            frozen = {k: v.detach() for k, v in self.discriminator.named_parameters()}
            generator_loss = -functional_call(self.discriminator, frozen, (reconstruction,)).mean()
            loss = loss + discriminator_loss + self.adversarial_weight * generator_loss
            outputs |= {
                "discriminator": discriminator_loss.detach(),
                "adversarial": generator_loss.detach(),
            }
        return {"loss": loss, **outputs}
