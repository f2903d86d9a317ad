"""Prompts for a command: a file of the user's, or a registered prompt set (``builtin:NAME``).

A file is plain text (one prompt a line) or JSON lines (``{"prompt": ..., "tags": [...]}``).
Prompt sets are registered by plugins (``register_prompt_sets``); the built-in world's are
``world`` (every subject, each prompt tagged ``seen`` or ``unseen`` by whether curated sets keep
its subject), ``world-small`` and ``validation``.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

from emu_cli.plugin import registry
from emu_cli.plugin.prompt_set import Prompt

__all__ = ["Prompt", "load_prompts", "sample_prompts"]


def load_prompts(spec: str | Path) -> list[Prompt]:
    """The prompts of ``builtin:NAME`` or of a file; errors name the input and the problem."""
    spec = str(spec)
    if spec.startswith("builtin:"):
        name = spec.removeprefix("builtin:")
        sets = registry.get_prompt_sets()
        if name not in sets:
            raise ValueError(
                f"no built-in prompt set '{name}' (built-in: {', '.join(sorted(sets))})"
            )
        return sets[name].prompts()
    path = Path(spec)
    if not path.is_file():
        raise ValueError(f"prompt file '{path}' does not exist (or use builtin:NAME)")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        raise ValueError(f"prompt file '{path}' is not UTF-8 text: {error}") from error
    prompts = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        if path.suffix != ".jsonl":
            prompts.append(Prompt(line.strip()))
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            raise ValueError(f"{path}:{number}: not JSON ({error.msg})") from error
        tags = record.get("tags", []) if isinstance(record, dict) else None
        if not isinstance(record, dict) or "prompt" not in record:
            raise ValueError(f"{path}:{number}: expected a JSON object with a 'prompt' key")
        if not isinstance(tags, list) or not all(isinstance(tag, str) for tag in tags):
            raise ValueError(f"{path}:{number}: 'tags' must be a list of strings, not {tags!r}")
        prompts.append(Prompt(str(record["prompt"]), tuple(tags)))
    if not prompts:
        raise ValueError(f"prompt file '{path}' holds no prompt")
    return prompts


def sample_prompts(prompts: list[Prompt], count: int | None, seed: int = 0) -> list[Prompt]:
    """At most ``count`` of ``prompts`` (all for None), drawn without replacement by ``seed``
    and kept in their order: a quick run on a large benchmark, the same one every time."""
    if count is None or count >= len(prompts):
        return prompts
    if count < 1:
        raise ValueError(f"--max-prompts must be at least 1, got {count}")
    chosen = sorted(random.Random(seed).sample(range(len(prompts)), count))
    return [prompts[i] for i in chosen]
