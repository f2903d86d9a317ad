"""Stage 1: the VQ image tokenizer (diffusers VQModel). Its images are in [0, 1], as aMUSEd's.

Loss: L1 reconstruction, the quantizer's codebook and commitment terms, optionally a small
patch-GAN term. Dead codes (a known failure: a code no encoder output is near stops learning,
and the usable codebook shrinks) are restarted at each step from this batch's encoder outputs,
before the quantizer uses them, as Jukebox and SoundStream do.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from emu_cli.kit.reconstruction import adversarial_losses


def to_unit(images: torch.Tensor) -> torch.Tensor:
    """The trainer's [-1, 1] images to the tokenizer's [0, 1]."""
    return (images + 1) / 2


def nearest_codes(vq: nn.Module, latents: torch.Tensor) -> torch.Tensor:
    """Each latent vector's code, flattened over (batch, height, width)."""
    vectors = latents.permute(0, 2, 3, 1).reshape(-1, latents.shape[1])
    return torch.cdist(vectors, vq.quantize.embedding.weight).argmin(dim=1)


def tokenize(vq: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """Images in [-1, 1] to token ids (batch, height, width)."""
    latents = vq.encode(to_unit(images)).latents
    return nearest_codes(vq, latents).view(latents.shape[0], *latents.shape[2:])


def detokenize(vq: nn.Module, tokens: torch.Tensor) -> torch.Tensor:
    """Token ids (batch, height, width) back to images in [-1, 1], through the codebook."""
    shape = (*tokens.shape, vq.config.latent_channels)
    return vq.decode(tokens, force_not_quantize=True, shape=shape).sample * 2 - 1


def restart_dead_codes(
    vq: nn.Module, latents: torch.Tensor, generator: torch.Generator
) -> torch.Tensor:
    """Move codes no latent of this batch chose onto randomly picked latents of the batch; return
    the fraction of the codebook in use before the restart. Under data parallelism, process 0's
    codebook is broadcast, so every replica keeps the same weights."""
    with torch.no_grad():
        codebook = vq.quantize.embedding.weight
        used = torch.bincount(nearest_codes(vq, latents), minlength=codebook.shape[0]) > 0
        dead = (~used).nonzero().flatten()
        if len(dead):
            vectors = latents.permute(0, 2, 3, 1).reshape(-1, latents.shape[1])
            picks = torch.randint(
                0, len(vectors), (len(dead),), generator=generator, device=generator.device
            )
            codebook[dead] = vectors[picks.to(vectors.device)].to(codebook.dtype)
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.broadcast(codebook, src=0)
    return used.float().mean()


class TokenizerTraining(nn.Module):
    def __init__(
        self,
        vq: nn.Module,
        discriminator: nn.Module | None = None,
        adversarial_weight: float = 0.0,
    ):
        super().__init__()
        self.vq, self.discriminator = vq, discriminator
        self.adversarial_weight = adversarial_weight

    def forward(self, batch: dict) -> dict[str, torch.Tensor]:
        images = to_unit(batch["pixels"])
        latents = self.vq.encode(images).latents
        # The nearest-code search stays in float32 under bf16 autocast: in bf16 the distances
        # to nearby codes tie or swap, and the loss after 60 steps was 0.132 against 0.108.
        with torch.autocast(latents.device.type, enabled=False):
            latents = latents.float()
            usage = restart_dead_codes(self.vq, latents.detach(), batch["generator"])
            quantized, codebook_loss, _ = self.vq.quantize(latents)
        reconstruction = self.vq.decoder(self.vq.post_quant_conv(quantized))
        reconstruction_loss = F.l1_loss(reconstruction, images)
        loss = reconstruction_loss + codebook_loss
        outputs = {
            "reconstruction": reconstruction_loss.detach(),
            "codebook": codebook_loss.detach(),
            "codebook_usage": usage,
        }
        if self.discriminator is not None and self.adversarial_weight > 0:
            discriminator_loss, generator_loss = adversarial_losses(
                self.discriminator, batch["pixels"], reconstruction * 2 - 1
            )
            loss = loss + discriminator_loss + self.adversarial_weight * generator_loss
            outputs |= {
                "discriminator": discriminator_loss.detach(),
                "adversarial": generator_loss.detach(),
            }
        return {"loss": loss, **outputs}
