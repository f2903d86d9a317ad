"""How far apart a model's text encoder puts captions that differ in one attribute only.

For each caption template of the world, the captions naming every subject (then every color,
every background) with the rest held fixed are encoded; the figure per attribute is the mean
distance between their token states. A denoiser can only draw what the states tell apart: a
text encoder trained from scratch at the denoiser's rate shrinks the subject's distance far
below the background's (docs/benchmarks.md). ``--random PRESET`` prints the same figures for
the backend's text encoder as built, before any training, beside the model's.

    python bench/text_separation.py runs/demo/pixel/pre --random small
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from emu_cli.kit.text import token_ids
from emu_cli.runtime import quiet_libraries
from emu_cli.world.concepts import BACKGROUNDS, COLORS, SUBJECTS, caption

ATTRIBUTES = {"subject": SUBJECTS, "color": tuple(COLORS), "background": tuple(BACKGROUNDS)}
HELD = {"subject": "circle", "color": "red", "background": "sky"}
TEMPLATES = 6


@torch.no_grad()
def separation(tokenizer, encoder) -> dict[str, float]:
    """Per attribute, the mean distance between the token states of captions that name
    different values of it and the same values of the others."""
    encoder.eval()
    figures = {}
    for attribute, values in ATTRIBUTES.items():
        distances = []
        for template in range(TEMPLATES):
            captions = [
                caption(**{**HELD, attribute: value}, template=template) for value in values
            ]
            ids = token_ids(tokenizer, captions, encoder.device)
            states = encoder(ids).last_hidden_state.flatten(1)
            pairs = len(values) * (len(values) - 1)
            distances.append(torch.cdist(states, states).sum().item() / pairs)
        figures[attribute] = sum(distances) / len(distances)
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", type=Path, help="a model folder with text_encoder/ and tokenizer/")
    parser.add_argument("--random", metavar="PRESET", help="also the text encoder as built")
    args = parser.parse_args()
    quiet_libraries()

    from emu_cli.checkpoint.folder import load_checkpoint

    backend, model, _ = load_checkpoint(args.model)
    rows = {"model": separation(model["tokenizer"], model["text_encoder"])}
    if args.random:
        torch.manual_seed(0)
        built = backend.build(args.random, {})
        rows[f"as built ({args.random})"] = separation(built["tokenizer"], built["text_encoder"])
    print(f"{'text encoder':<22}" + "".join(f"{name:>12}" for name in ATTRIBUTES))
    for label, figures in rows.items():
        print(f"{label:<22}" + "".join(f"{figures[name]:>12.2f}" for name in ATTRIBUTES))
    print(json.dumps({"model": str(args.model), **rows}))


if __name__ == "__main__":
    main()
