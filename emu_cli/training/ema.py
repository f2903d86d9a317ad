"""Exponential moving average of the trained parameters, with the usual warm-up of its decay."""

from __future__ import annotations

from collections.abc import Iterable

import torch


class EMA:
    def __init__(self, parameters: Iterable[torch.nn.Parameter], decay: float):
        self.parameters = list(parameters)
        self.decay = decay
        self.shadow = [p.detach().clone() for p in self.parameters]
        self.updates = 0
        self._stored: list[torch.Tensor] | None = None

    def current_decay(self) -> float:
        # Early averages would be dominated by the random initialisation without this warm-up.
        return min(self.decay, (1 + self.updates) / (10 + self.updates))

    @torch.no_grad()
    def update(self) -> None:
        weight = 1.0 - self.current_decay()
        torch._foreach_lerp_(self.shadow, [p.detach() for p in self.parameters], weight)
        self.updates += 1

    @torch.no_grad()
    def swap_in(self) -> None:
        """Put the averaged weights into the model, keeping the trained ones aside."""
        self._stored = [p.detach().clone() for p in self.parameters]
        for parameter, shadow in zip(self.parameters, self.shadow, strict=True):
            parameter.copy_(shadow)

    @torch.no_grad()
    def swap_out(self) -> None:
        assert self._stored is not None, "swap_out without swap_in"
        for parameter, stored in zip(self.parameters, self._stored, strict=True):
            parameter.copy_(stored)
        self._stored = None

    def state_tensors(self) -> dict[str, torch.Tensor]:
        return {f"ema.{i}": s.contiguous() for i, s in enumerate(self.shadow)}

    @torch.no_grad()
    def load_state_tensors(self, tensors: dict[str, torch.Tensor], updates: int) -> None:
        for i, shadow in enumerate(self.shadow):
            shadow.copy_(tensors[f"ema.{i}"])
        self.updates = updates
