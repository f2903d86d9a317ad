"""Public prompt benchmarks, registered as prompt sets like any plugin's: PartiPrompts
(``builtin:parti``, 1,632 prompts in 12 categories and 11 challenges), read from its Hub dataset
through ``datasets``, each prompt tagged ``category:NAME`` and ``challenge:NAME`` so that an
evaluation reports a table per category (see :data:`emu_cli.evaluate.protocol.REPORTED`)."""

from __future__ import annotations

from collections.abc import Callable

from emu_cli.errors import EmuError
from emu_cli.plugin.hookspecs import hookimpl
from emu_cli.plugin.prompt_set import Prompt, PromptSet

PARTI = "nateraw/parti-prompts"


def parti_prompts() -> list[Prompt]:
    """PartiPrompts from the Hub (or the download cache), through ``datasets``."""
    try:
        from datasets import load_dataset
    except ImportError as error:
        raise EmuError(
            "builtin:parti reads PartiPrompts with the `datasets` package: pip install datasets"
        ) from error
    from emu_cli.hub import explain

    try:
        rows = load_dataset(PARTI, split="train")
    except Exception as error:  # datasets and huggingface_hub raise many types
        raise EmuError(explain(error, f"PartiPrompts dataset '{PARTI}'")) from error
    missing = {"Prompt", "Category"} - set(rows.column_names)
    if missing:
        raise EmuError(f"'{PARTI}' has no column {', '.join(sorted(missing))}")
    return [
        Prompt(
            str(row["Prompt"]),
            tuple(f"{key.lower()}:{row[key]}" for key in ("Category", "Challenge") if row.get(key)),
        )
        for row in rows
    ]


@hookimpl
def register_prompt_sets(register: Callable[[object], None]) -> None:
    register(
        PromptSet(
            "parti",
            parti_prompts,
            f"PartiPrompts (Google, 1,632 prompts; Hub dataset {PARTI}; needs datasets)",
        )
    )
