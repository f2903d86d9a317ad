"""``emu evaluate``: the paper's side-by-side protocol between two models.

Both models draw each image from the same seed (``--seed`` + its number). Every pair becomes a
comparison in an annotation store (``OUT/annotations.sqlite``, the review app's schema), and
votes are cast on it: by the world's simulated annotators (5 visual-appeal, caption hidden:
A / B / Tie; 3 faithfulness, caption shown: A / B / Both / Neither), or by people in
``emu review OUT --stage compare``. Results are computed from the stored votes, whoever cast
them, so running the command again after people voted reports their verdict.

Layout of ``--out``: ``images/a/``, ``images/b/`` (PNG per prompt and image, ``index.json``),
``annotations.sqlite``, ``results.json``, ``winrates.png``, ``report.html``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from PIL import Image

from emu_cli.evaluate.prompts import Prompt, load_prompts, sample_prompts
from emu_cli.evaluate.winrate import outcomes, win_rate
from emu_cli.files import write_atomic
from emu_cli.human.store import AnnotationStore
from emu_cli.lock import FolderLock
from emu_cli.plugin import registry as plugins
from emu_cli.plugin.judge import Judge
from emu_cli.plugin.panel import Pair, Panel
from emu_cli.runtime import quiet_libraries

if TYPE_CHECKING:
    from emu_cli.checkpoint.folder import Located

ANNOTATORS = ("simulated", "review")
SIDES = ("a", "b")


@dataclass(frozen=True)
class Settings:
    steps: int = 25
    guidance: float | None = None  # None: each model's backend samples at its own default
    seed: int = 0
    images_per_prompt: int = 1
    device: str = "auto"
    max_prompts: int | None = None  # a seeded sample of the prompt set (None: all of it)
    # One side's own scale, over ``guidance``: models compared each at the scale it draws best
    # at (a tuned model's best scale need not be its base model's).
    side_guidance: dict[str, float] = field(default_factory=dict)

    def requested_guidance(self, side: str) -> float | None:
        return self.side_guidance.get(side, self.guidance)

    def describe(self) -> dict[str, Any]:
        described = {
            "steps": self.steps,
            "seed": self.seed,
            "images_per_prompt": self.images_per_prompt,
        }
        return (
            described
            if self.max_prompts is None
            else {**described, "max_prompts": self.max_prompts}
        )


def reported(tag: str) -> bool:
    """Whether win rates are reported for the prompts carrying ``tag`` as well as for all:
    ``seen``/``unseen`` (subjects curated sets keep or not) and every ``KIND:NAME`` tag, such as
    PartiPrompts' ``category:Animals``. Other tags (the world's subject names) only label."""
    return tag in ("seen", "unseen") or ":" in tag


def _generate(
    model: Located, items: list[Prompt], settings: Settings, side: str, folder: Path
) -> tuple[list[Path], float, bool]:
    """The model's images, one file per (prompt, image), the guidance they were drawn with
    (the side's, the settings' or the backend's default), and whether they were made now: the
    ones the same checkpoint (path and save time) and settings made before are reused, so a
    rerun only recomputes votes and results."""
    from emu_cli.checkpoint.folder import checkpoint_provenance, load_checkpoint
    from emu_cli.plugin.registry import get_backend
    from emu_cli.runtime import resolve_device
    from emu_cli.sampling import sample_in_batches

    provenance = checkpoint_provenance(model.path)
    backend = get_backend(provenance.backend)
    guidance = backend.guidance(settings.requested_guidance(side))
    files = [
        folder / f"{i:04d}-{j:02d}.png"
        for i in range(len(items))
        for j in range(settings.images_per_prompt)
    ]
    record = {
        "model": model.name,
        "saved_at": provenance.saved_at,
        "prompts": [p.text for p in items],
        **settings.describe(),
        "guidance": guidance,
    }
    index = folder / "index.json"
    fresh = index.is_file() and json.loads(index.read_text()) == record
    if fresh and all(f.is_file() for f in files):
        return files, guidance, False
    loaded = load_checkpoint(model.path, backend)[1]
    device = resolve_device(settings.device)
    loaded.to(device)
    prompts = [p.text for p in items for _ in range(settings.images_per_prompt)]
    # A seed per image, the same for both models: pairs differ only by the model, and
    # prompts do not all start from one noise.
    seeds = [settings.seed + k for k in range(len(prompts))]
    images = sample_in_batches(
        backend, loaded, prompts, steps=settings.steps, guidance=guidance, seeds=seeds,
        device=device, description=f"model {side.upper()}: {model.name}",
    )  # fmt: skip
    folder.mkdir(parents=True, exist_ok=True)
    for image, path in zip(images, files, strict=True):
        image.save(path)
    index.write_text(json.dumps(record, indent=2))
    return files, guidance, True


def evaluate(
    model_a: str | Path,
    model_b: str | Path,
    prompts: str,
    out: Path,
    *,
    annotators: str = "simulated",
    panel: str = "world",
    settings: Settings | None = None,
    judge: str | None = None,
    clip_model: str | None = None,
    clip_pretrained: str | None = None,
    resamples: int = 1000,
) -> dict[str, Any]:
    """Generate, collect votes, and write the results; returns what ``results.json`` holds.
    Each model is a checkpoint folder or a Hub model repo (``locate_checkpoint``). With
    ``annotators="simulated"`` the registered ``panel`` votes; with ``"review"``, people.
    ``judge`` scores both sides beside the votes: a judge spec (:mod:`emu_cli.judges.spec`),
    ``"none"``, or None: the world's for models of the world, refused for others.
    ``out`` is held by this evaluation alone while it runs."""
    out = Path(out)
    with FolderLock(out, "emu evaluate"):
        from emu_cli.checkpoint.folder import locate_checkpoint

        quiet_libraries()
        if annotators not in ANNOTATORS:
            raise ValueError(
                f"--annotators must be one of {', '.join(ANNOTATORS)}, got {annotators!r}"
            )
        settings = settings or Settings()
        if settings.images_per_prompt < 1:
            raise ValueError(f"--images-per-prompt must be >= 1, got {settings.images_per_prompt}")
        items = sample_prompts(load_prompts(prompts), settings.max_prompts, settings.seed)
        models = {"a": locate_checkpoint(model_a), "b": locate_checkpoint(model_b)}
        scorer = _judge(judge, [models[side].path for side in SIDES])
        made = {
            side: _generate(models[side], items, settings, side, out / "images" / side)
            for side in SIDES
        }
        files = {side: made[side][0] for side in SIDES}
        per_prompt = settings.images_per_prompt
        pairs = [
            {
                "id": files["a"][k].stem,
                "prompt": items[k // per_prompt].text,
                "tags": list(items[k // per_prompt].tags),
                "group": str(k // per_prompt),
                "image_a": str(files["a"][k].relative_to(out)),
                "image_b": str(files["b"][k].relative_to(out)),
            }
            for k in range(len(files["a"]))
        ]

        store = AnnotationStore(out / "annotations.sqlite")
        if any(regenerated for _, _, regenerated in made.values()) and store.votes():
            store.close()
            raise ValueError(
                f"'{out}' holds votes on images of another checkpoint or other settings; "
                "choose another --out (the votes there are kept)"
            )
        try:
            with store.transaction():
                for pair in pairs:
                    store.add_comparison(
                        pair["id"], pair["prompt"], pair["image_a"], pair["image_b"],
                        models["a"].name, models["b"].name, pair["tags"],
                    )  # fmt: skip
            if annotators == "simulated":
                _simulate(plugins.get_panel(panel), store, pairs, out, settings.seed)
            votes = store.votes()
        finally:
            store.close()

        tags = sorted({t for p in pairs for t in p["tags"] if reported(t)})
        subsets = {"all": pairs, **{tag: [p for p in pairs if tag in p["tags"]] for tag in tags}}
        protocols = {}
        for protocol in ("appeal", "faithfulness"):
            decided = outcomes(votes, protocol)
            protocols[protocol] = {
                name: win_rate(
                    [decided[p["id"]] for p in chosen if p["id"] in decided],
                    [p["group"] for p in chosen if p["id"] in decided],
                    resamples=resamples,
                    seed=settings.seed,
                ).to_dict()
                for name, chosen in subsets.items()
            }
        results = {
            "a": models["a"].name,
            "b": models["b"].name,
            "prompts": prompts,
            "annotators": annotators,
            "pairs": len(pairs),
            "votes": len(votes),
            **settings.describe(),
            "guidance": {side: made[side][1] for side in SIDES},
            "protocols": protocols,
            "proxies": _proxies(pairs, out, subsets, scorer, clip_model, clip_pretrained),
        }
        # atomic: a results.json is what tells a rerun of the demo that this evaluation is done
        write_atomic(out / "results.json", json.dumps(results, indent=2))
        from emu_cli.evaluate.report import write_report

        write_report(results, pairs, out, votes)
        return results


def _simulate(
    panel: Panel, store: AnnotationStore, pairs: list[dict], out: Path, seed: int
) -> None:
    """The panel votes on pairs none of its simulated annotators has voted on yet."""

    voted = {v.comparison for v in store.votes() if v.annotator.startswith("simulated-")}
    todo = [p for p in pairs if p["id"] not in voted]
    panel.vote(
        store,
        [
            Pair(p["id"], p["prompt"], *(Image.open(out / p[f"image_{s}"]) for s in SIDES))
            for p in todo
        ],
        seed=seed,
    )


def _judge(spec: str | None, models: list[Path]) -> Judge | None:
    """The judge of the proxy scores, settled before any image is made."""
    from emu_cli.checkpoint.folder import checkpoint_provenance
    from emu_cli.judges.spec import default_judge, trained_on_world

    if spec == "none":
        return None
    world = all(trained_on_world(checkpoint_provenance(path)) for path in models)
    installed = plugins.get_judges()
    return plugins.judge(default_judge(spec, world, "emu evaluate", installed))


def _proxies(
    pairs: list[dict],
    out: Path,
    subsets: dict[str, list[dict]],
    judge: Judge | None,
    clip_model: str | None,
    clip_pretrained: str | None,
) -> dict[str, Any]:
    """Automatic measures beside the votes: mean judge scores and CLIP score per side."""
    import numpy as np

    prompts = [p["prompt"] for p in pairs]
    scores: dict[str, dict[str, np.ndarray]] = {}
    images = {side: [Image.open(out / p[f"image_{side}"]) for p in pairs] for side in SIDES}
    if judge is not None:
        for side in SIDES:
            for name, values in judge.score(images[side], prompts).items():
                scores.setdefault(f"{judge.spec}_{name}", {})[side] = np.asarray(values, float)
    if clip_model:
        from emu_cli.curate.clip import ClipEncoder

        clip = ClipEncoder.load(clip_model, clip_pretrained)
        texts = clip.encode_texts(prompts)
        for side in SIDES:
            pictures = clip.encode_images(images[side])
            scores.setdefault("clip_score", {})[side] = (pictures * texts).sum(1)
    position = {p["id"]: i for i, p in enumerate(pairs)}
    return {
        measure: {
            subset: {
                side: round(float(values[side][[position[p["id"]] for p in chosen]].mean()), 4)
                for side in SIDES
            }
            for subset, chosen in subsets.items()
            if chosen
        }
        for measure, values in scores.items()
    }
