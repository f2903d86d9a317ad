"""The prompt-set contract: named lists of prompts that commands take as ``builtin:NAME``.

A prompt carries tags (``seen``/``unseen``, a subject...) that the evaluation reports win rates
by. The built-in world registers ``world``, ``world-small`` and ``validation``; a team registers
its own benchmark (PartiPrompts, DrawBench, a product's prompts) through ``register_prompt_sets``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Prompt:
    text: str
    tags: tuple[str, ...] = field(default=())


@dataclass(frozen=True)
class PromptSet:
    """``prompts()`` is called when a command asks for the set, so a large one costs nothing
    until used."""

    name: str
    prompts: Callable[[], list[Prompt]]
    description: str = ""
