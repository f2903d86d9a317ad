"""The example backend (examples/emu-example-backend) with a fault to inject, for tests:
EMU_TOY_NAN_AT=N makes its loss NaN from its N-th forward pass on."""

from __future__ import annotations

import os

from emu_example_backend import ColorBackend, ColorTraining

from emu_cli import hookimpl


class FaultyTraining(ColorTraining):
    def __init__(self, colors):
        super().__init__(colors)
        self.calls = 0
        self.nan_at = int(os.environ.get("EMU_TOY_NAN_AT", "0"))

    def forward(self, batch):
        self.calls += 1
        outputs = super().forward(batch)
        if self.nan_at and self.calls >= self.nan_at:
            outputs["loss"] = outputs["loss"] * float("nan")
        return outputs


class ToyBackend(ColorBackend):
    name = "toy"
    description = "the example backend, whose loss can be made NaN (test plugin)"

    def training_module(self, model, stage, recipe):
        return FaultyTraining(model["colors"])


@hookimpl
def register_backends(register):
    register(ToyBackend())
