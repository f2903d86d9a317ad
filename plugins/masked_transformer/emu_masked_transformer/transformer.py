"""Stage 2: a bidirectional transformer over image tokens (diffusers UVit2DModel), conditioned on
CLIP text states, trained as Muse: mask a cosine-scheduled fraction of each image's tokens and
predict them (cross-entropy on the masked positions only, with label smoothing)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

AESTHETIC_MICRO_CONDITION = 6  # what AmusedPipeline passes by default; kept fixed in training


def micro_conditions(count: int, size: int, device: torch.device) -> torch.Tensor:
    """aMUSEd's micro-conditioning row (width, height, crop top, crop left, aesthetic score)."""
    row = torch.tensor([size, size, 0, 0, AESTHETIC_MICRO_CONDITION], dtype=torch.float32)
    return row.to(device).expand(count, -1)


def text_conditions(text_encoder: nn.Module, input_ids: torch.Tensor):
    """(pooled projected embedding, penultimate hidden states), as AmusedPipeline computes them."""
    outputs = text_encoder(input_ids, return_dict=True, output_hidden_states=True)
    return outputs.text_embeds, outputs.hidden_states[-2]


def cosine_mask(
    count: int, length: int, generator: torch.Generator, device: torch.device
) -> torch.Tensor:
    """(count, length) booleans: for each row a fraction cos(pi/2 * u), u ~ U(0, 1), of the
    positions, at least one, chosen at random."""
    fraction = torch.cos(
        math.pi / 2 * torch.rand(count, generator=generator, device=generator.device)
    )
    masked = (fraction * length).ceil().clamp(1, length)
    scores = torch.rand(count, length, generator=generator, device=generator.device)
    ranks = scores.argsort(dim=1).argsort(dim=1)
    return (ranks < masked[:, None]).to(device)


class MaskedTokenTraining(nn.Module):
    def __init__(
        self,
        transformer: nn.Module,
        text_encoder: nn.Module,
        mask_token_id: int,
        image_size: int,
        train_text_encoder: bool,
        text_encoder_lr_scale: float = 1.0,
        label_smoothing: float = 0.1,
    ):
        super().__init__()
        self.transformer, self.text_encoder = transformer, text_encoder
        self.learning_rate_scales = {"text_encoder": text_encoder_lr_scale}
        self.mask_token_id, self.image_size = mask_token_id, image_size
        self.train_text_encoder, self.label_smoothing = train_text_encoder, label_smoothing

    def forward(self, batch: dict) -> dict[str, torch.Tensor]:
        tokens = batch["tokens"]
        count = tokens.shape[0]
        with torch.set_grad_enabled(self.train_text_encoder and torch.is_grad_enabled()):
            pooled, states = text_conditions(self.text_encoder, batch["input_ids"])
        mask = cosine_mask(count, tokens[0].numel(), batch["generator"], tokens.device)
        mask = mask.view_as(tokens)
        inputs = torch.where(mask, torch.full_like(tokens, self.mask_token_id), tokens)
        logits = self.transformer(
            inputs,
            micro_conds=micro_conditions(count, self.image_size, tokens.device),
            pooled_text_emb=pooled,
            encoder_hidden_states=states,
        )  # (batch, codebook, height, width)
        chosen = logits.permute(0, 2, 3, 1)[mask]
        loss = F.cross_entropy(chosen.float(), tokens[mask], label_smoothing=self.label_smoothing)
        accuracy = (chosen.argmax(dim=-1) == tokens[mask]).float().mean()
        return {"loss": loss, "masked_accuracy": accuracy.detach()}
