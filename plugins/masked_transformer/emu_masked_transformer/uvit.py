"""The stage-2 network: diffusers' UVit2DModel with a fixed 2D sine position table added to its
token embeddings.

UVit2D has no position embedding: only its convolutions' zero padding tells a token where it is,
and only near the grid's edge. With every token masked (the first decoding step) the positions
look alike, so a captioned subject has no place to be drawn: on 5,000 clean pictures of the world
the stock model drew the named color and background but the named subject no more often than
chance (0.17 after 8,000 steps), with the table 0.76; memorising 64 pictures it drew their
subjects in 30 % of cases, with the table in 81 % (docs/benchmarks.md, "The `small` models on the
world's clean set").

The table holds no weights, so the state dict is UVit2DModel's. A checkpoint records the class as
``["emu_masked_transformer.uvit", "PositionalUVit2DModel"]``; diffusers resolves such a name from
the modules already imported, so import this module before ``AmusedPipeline.from_pretrained``.
"""

from __future__ import annotations

import functools
import math

import torch

# diffusers finds a component's loading method by looking up its base classes by name in the
# module its checkpoint names, so this module must expose ModelMixin.
from diffusers import ModelMixin, UVit2DModel

__all__ = ["ModelMixin", "PositionalUVit2DModel", "sine_position_table"]

# The slowest wave's period over 2*pi, in tokens: far longer than a grid's side (32 at ``base``).
LONGEST_WAVELENGTH = 100.0


def sine_position_table(channels: int, height: int, width: int) -> torch.Tensor:
    """(channels, height, width): a quarter of the channels the sine of the row at geometrically
    spaced frequencies, a quarter its cosine, then the same for the column (any remainder zero)."""
    quarter = channels // 4
    frequencies = torch.exp(-math.log(LONGEST_WAVELENGTH) * torch.arange(quarter) / quarter)
    rows = torch.arange(height)[:, None] * frequencies  # (height, quarter)
    columns = torch.arange(width)[:, None] * frequencies
    table = torch.zeros(channels, height, width)
    table[:quarter] = rows.sin().T[:, :, None]
    table[quarter : 2 * quarter] = rows.cos().T[:, :, None]
    table[2 * quarter : 3 * quarter] = columns.sin().T[:, None, :]
    table[3 * quarter : 4 * quarter] = columns.cos().T[:, None, :]
    return table


@functools.lru_cache(maxsize=8)
def _table_on(
    channels: int, height: int, width: int, device: torch.device, dtype: torch.dtype
) -> torch.Tensor:
    # Built once per grid, device and precision: every forward pass (each training step, each
    # decoding step twice under guidance) would otherwise rebuild it and copy it to the device.
    return sine_position_table(channels, height, width).to(device, dtype)


def _add_position_table(module: torch.nn.Module, args: tuple, embeddings: torch.Tensor):
    return embeddings + _table_on(*embeddings.shape[1:], embeddings.device, embeddings.dtype)


class PositionalUVit2DModel(UVit2DModel):
    """UVit2DModel whose token embeddings (batch, channels, height, width) get the sine table."""

    # diffusers reads a model's config keys from its __init__'s signature: keep UVit2DModel's.
    @functools.wraps(UVit2DModel.__init__)
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.embed.register_forward_hook(_add_position_table)
