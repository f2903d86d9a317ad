"""How a stage is trained. One dataclass for every backend and for both pre-training and
quality-tuning, so the quality-tuning recipe lives in exactly one place."""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.util
import math
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from emu_cli.training.trackers import REPORT_TO

if TYPE_CHECKING:
    import torch

OPTIMIZERS = ("adamw", "adamw8bit")


@dataclass
class Recipe:
    steps: int = 1000
    batch_size: int = 32
    learning_rate: float = 1e-4
    # A progressive-resolution schedule as the paper pre-trains: [[resolution, steps], ...].
    # Empty means one phase at ``resolution`` for ``steps``.
    resolution_schedule: list[list[int]] = field(default_factory=list)
    resolution: int = 64
    warmup_steps: int = 100
    lr_schedule: str = "cosine"  # "cosine" or "constant" (after warm-up)
    weight_decay: float = 0.01
    adam_beta1: float = 0.9
    adam_beta2: float = 0.999
    max_grad_norm: float = 1.0
    # a loss above this many times its recent level holds checkpoints back (training.divergence)
    loss_spike_factor: float = 10.0
    ema_decay: float = 0.999  # 0 disables the EMA
    noise_offset: float = 0.0  # the paper: 0.02 late in pre-training, 0.1 for quality-tuning
    caption_dropout: float = 0.1  # for classifier-free guidance
    random_flip: bool = True
    gradient_accumulation_steps: int = 1
    mixed_precision: str = "no"  # "no", "fp16", "bf16"
    # "auto": the math kernel under bf16 on a CPU (see attention_kernel), torch's choice
    # elsewhere; "torch": always torch's choice; "math": always the math kernel
    attention: str = "auto"
    # recompute the trained networks' activations in the backward pass: less memory, about a
    # third more compute (diffusers' and transformers' own gradient checkpointing)
    gradient_checkpointing: bool = False
    # "adamw8bit": bitsandbytes' AdamW with both moments in 1 byte a parameter instead of 4,
    # 6 of the 20 bytes a trained parameter costs (docs/backends.md)
    optimizer: str = "adamw"
    checkpoint_every: int = 500
    preview_every: int = 500  # 0 disables preview grids
    keep_checkpoints: int = 2
    num_workers: int = -1  # -1: decode inline on CPU (faster on 2 cores), 4 workers on GPU
    report_to: str = "none"  # "tensorboard", "wandb" or "all" too (emu_cli.training.trackers)
    # batches of one aspect bucket, not centre squares, where the backend takes non-square
    # images (Backend.size_multiple; emu_cli.data.buckets)
    aspect_buckets: bool = True
    seed: int = 0

    def phases(self) -> list[tuple[int, int]]:
        """(resolution, steps) per phase; their steps add up to ``steps``."""
        if not self.resolution_schedule:
            return [(self.resolution, self.steps)]
        phases = [(int(r), int(s)) for r, s in self.resolution_schedule]
        if sum(s for _, s in phases) != self.steps:
            raise ValueError(
                f"resolution_schedule {self.resolution_schedule} has "
                f"{sum(s for _, s in phases)} steps but the recipe has steps={self.steps}"
            )
        return phases

    def validate(self) -> Recipe:
        problems = []
        if self.steps < 1:
            problems.append(f"steps must be >= 1, got {self.steps}")
        if self.batch_size < 1:
            problems.append(f"batch_size must be >= 1, got {self.batch_size}")
        if not (math.isfinite(self.learning_rate) and self.learning_rate > 0):
            problems.append(f"learning_rate must be a number > 0, got {self.learning_rate}")
        if self.resolution < 1:
            problems.append(f"resolution must be >= 1, got {self.resolution}")
        if self.lr_schedule not in ("cosine", "constant"):
            problems.append(f"lr_schedule must be 'cosine' or 'constant', got {self.lr_schedule!r}")
        if self.mixed_precision not in ("no", "fp16", "bf16"):
            problems.append(
                f"mixed_precision must be no, fp16 or bf16, got {self.mixed_precision!r}"
            )
        if self.report_to not in REPORT_TO:
            problems.append(
                f"report_to must be one of {', '.join(REPORT_TO)}, got {self.report_to!r}"
            )
        if self.optimizer not in OPTIMIZERS:
            problems.append(
                f"optimizer must be one of {', '.join(OPTIMIZERS)}, got {self.optimizer!r}"
            )
        elif self.optimizer == "adamw8bit" and importlib.util.find_spec("bitsandbytes") is None:
            problems.append("optimizer adamw8bit needs bitsandbytes: pip install 'emu-cli[8bit]'")
        if self.attention not in ("auto", "torch", "math"):
            problems.append(f"attention must be auto, torch or math, got {self.attention!r}")
        for name in ("caption_dropout", "ema_decay", "adam_beta1", "adam_beta2"):
            if not 0 <= getattr(self, name) < 1:
                problems.append(f"{name} must be in [0, 1), got {getattr(self, name)}")
        # 0 turns these off: no warm-up, decay, clipping, offset, periodic checkpoint or preview
        for name in (
            "warmup_steps",
            "weight_decay",
            "max_grad_norm",
            "loss_spike_factor",
            "noise_offset",
            "checkpoint_every",
            "preview_every",
        ):
            if not getattr(self, name) >= 0:
                problems.append(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.gradient_accumulation_steps < 1:
            problems.append(
                f"gradient_accumulation_steps must be >= 1, got {self.gradient_accumulation_steps}"
            )
        if self.keep_checkpoints < 1:
            problems.append(f"keep_checkpoints must be >= 1, got {self.keep_checkpoints}")
        if self.num_workers < -1:
            problems.append(f"num_workers must be >= -1 (decoding inline), got {self.num_workers}")
        if problems:
            raise ValueError("invalid recipe: " + "; ".join(problems))
        self.phases()
        return self

    def attention_kernel(self, device: torch.device) -> AbstractContextManager:
        """The context a training step's forward pass runs in, choosing the attention kernel.

        Under bf16 autocast on a CPU torch picks flash attention, whose backward is slow at
        these models' short sequences (64-256 tokens); the math kernel trains every `small`
        preset faster to the same losses (docs/benchmarks.md, "The attention kernel").
        In float32 and on GPUs torch's choice is kept.
        """
        from torch.nn.attention import SDPBackend, sdpa_kernel

        math_kernel = self.attention == "math" or (
            self.attention == "auto" and device.type == "cpu" and self.mixed_precision == "bf16"
        )
        return sdpa_kernel(SDPBackend.MATH) if math_kernel else contextlib.nullcontext()

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def field_names(cls) -> set[str]:
        return {f.name for f in dataclasses.fields(cls)}

    def updated(self, **changes: Any) -> Recipe:
        """A copy with ``changes`` (None keeps a field). Values are read as their field's type,
        so a config file's "1e-4" or 100.0 is accepted where a number is meant, and text where a
        number is meant is refused naming the field."""
        unknown = set(changes) - self.field_names()
        if unknown:
            raise ValueError(f"unknown recipe fields: {', '.join(sorted(unknown))}")
        types = {f.name: f.type for f in dataclasses.fields(self)}
        return dataclasses.replace(
            self,
            **{k: _as_field_type(k, v, types[k]) for k, v in changes.items() if v is not None},
        )


def _as_field_type(name: str, value: Any, kind: str) -> Any:
    """``value`` as a recipe field of type ``kind`` (the annotation's text)."""
    if kind == "bool":
        if isinstance(value, bool):
            return value
        raise ValueError(f"invalid recipe: {name} must be true or false, got {value!r}")
    if kind in ("int", "float"):
        number = None
        if not isinstance(value, bool):  # a bool is an int to Python, not to a user
            with contextlib.suppress(TypeError, ValueError):
                number = float(value)
        if number is not None and kind == "float":
            return number
        if number is not None and number.is_integer():
            return int(number)
        words = "a whole number" if kind == "int" else "a number"
        raise ValueError(f"invalid recipe: {name} must be {words}, got {value!r}")
    if kind == "str" and not isinstance(value, str):
        raise ValueError(f"invalid recipe: {name} must be text, got {value!r}")
    return value
