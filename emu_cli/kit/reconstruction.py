"""What every image tokenizer or autoencoder stage shares, whatever its bottleneck (a KL latent,
a VQ codebook): PSNR, the small patch-GAN loss that sharpens reconstructions, and tensors back
to images for previews."""

from __future__ import annotations

import json
from pathlib import Path

import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn
from torch.func import functional_call

DISCRIMINATOR = "discriminator"  # its folder in a checkpoint


def to_images(batch: torch.Tensor) -> list[Image.Image]:
    """Tensors in [-1, 1] (N, 3, H, W) to PIL images."""
    array = ((batch.detach().float().clamp(-1, 1) + 1) * 127.5).round().byte()
    return [Image.fromarray(a.permute(1, 2, 0).cpu().numpy()) for a in array]


def psnr(reconstruction: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
    """Peak signal-to-noise ratio in dB for images in [-1, 1], per image."""
    error = ((reconstruction.clamp(-1, 1) - images) / 2).pow(2).mean(dim=(1, 2, 3))
    return -10 * torch.log10(error.clamp_min(1e-10))


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

    def save(self, checkpoint: Path) -> None:
        from safetensors.torch import save_model

        folder = Path(checkpoint) / DISCRIMINATOR
        folder.mkdir(parents=True, exist_ok=True)
        save_model(self, str(folder / "model.safetensors"))
        (folder / "config.json").write_text(json.dumps(self.config))

    @classmethod
    def load(cls, checkpoint: Path) -> PatchDiscriminator | None:
        """The checkpoint's discriminator, or None when it has none."""
        from safetensors.torch import load_model

        folder = Path(checkpoint) / DISCRIMINATOR
        if not folder.is_dir():
            return None
        discriminator = cls(**json.loads((folder / "config.json").read_text()))
        load_model(discriminator, str(folder / "model.safetensors"))
        return discriminator


def adversarial_losses(
    discriminator: nn.Module, images: torch.Tensor, reconstruction: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """(discriminator loss, generator loss) of a hinge GAN, for one optimizer and one backward
    pass: the discriminator sees detached reconstructions, and the generator's term goes through
    a copy of the discriminator's weights that carries no gradient back to them."""
    real = discriminator(images)
    fake = discriminator(reconstruction.detach())
    discriminator_loss = F.relu(1 - real).mean() + F.relu(1 + fake).mean()
    frozen = {k: v.detach() for k, v in discriminator.named_parameters()}
    generator_loss = -functional_call(discriminator, frozen, (reconstruction,)).mean()
    return discriminator_loss, generator_loss
