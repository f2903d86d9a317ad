"""Prompt sets: a file of the user's, or a built-in set (``builtin:NAME``).

A file is plain text (one prompt a line) or JSON lines (``{"prompt": ..., "tags": [...]}``).
The built-in sets are the world's captions: ``builtin:world`` covers every subject, each
prompt tagged ``seen`` or ``unseen`` by whether curated sets keep its subject
(``HELD_OUT_SUBJECTS`` are left out of them), so the evaluation also measures generality, on as
many pairs for the unseen subjects as for the seen ones; ``builtin:world-small`` is a short
version for tests; ``builtin:validation`` is a small set of seen subjects for quality-tuning's
early stopping.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class Prompt:
    text: str
    tags: tuple[str, ...] = field(default=())


def _world(per_subject: int, seed: int, subjects: tuple[str, ...] | None = None) -> list[Prompt]:
    from emu_cli.world.concepts import HELD_OUT_SUBJECTS, SUBJECTS
    from emu_cli.world.validation import concept_prompts

    subjects = subjects or SUBJECTS
    texts = iter(concept_prompts(subjects, per_subject, seed))  # per_subject each, in order
    return [
        Prompt(next(texts), ("unseen" if subject in HELD_OUT_SUBJECTS else "seen", subject))
        for subject in subjects
        for _ in range(per_subject)
    ]


def _validation() -> list[Prompt]:
    from emu_cli.world.concepts import HELD_IN_SUBJECTS

    return _world(4, seed=7, subjects=HELD_IN_SUBJECTS)


def _world_balanced(per_subject: int = 12) -> list[Prompt]:
    """``per_subject`` prompts for each subject, then more for each held-out one until the
    unseen split is as large as the seen one (72 each). With 12 each, the unseen split had 24
    pairs, whose 95% interval spans about 38 points (41.7%-79.2% around 62.5% in one demo run)
    and so cannot tell a share from a 70% bar."""
    from emu_cli.world.concepts import HELD_IN_SUBJECTS, HELD_OUT_SUBJECTS

    extra = per_subject * len(HELD_IN_SUBJECTS) // len(HELD_OUT_SUBJECTS) - per_subject
    return _world(per_subject, seed=0) + _world(extra, seed=1, subjects=HELD_OUT_SUBJECTS)


BUILTIN = {
    "world": _world_balanced,
    "world-small": lambda: _world(4, seed=0),
    "validation": _validation,
}


def load_prompts(spec: str | Path) -> list[Prompt]:
    """The prompts of ``builtin:NAME`` or of a file; errors name the input and the problem."""
    spec = str(spec)
    if spec.startswith("builtin:"):
        name = spec.removeprefix("builtin:")
        if name not in BUILTIN:
            raise ValueError(
                f"no built-in prompt set '{name}' (built-in: {', '.join(sorted(BUILTIN))})"
            )
        return BUILTIN[name]()
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
