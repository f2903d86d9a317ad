"""Model and dataset cards that carry a checkpoint's provenance: what it is, how to load it,
the recipe, the data it saw, and how it compared side by side."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from emu_cli.checkpoint.provenance import Provenance

# How to open a checkpoint without emu, by the pipeline class its model_index.json names;
# other classes get emu's way.
DIFFUSERS_LOADING = """from diffusers import {pipeline}

pipe = {pipeline}.from_pretrained("{repo}")
image = pipe("{prompt}", height={size}, width={size}).images[0]"""
LOADING = {
    **dict.fromkeys(
        (
            "StableDiffusionPipeline",
            "StableDiffusionXLPipeline",
            "StableDiffusion3Pipeline",
            "FluxPipeline",
            "IFPipeline",
        ),
        DIFFUSERS_LOADING,
    ),  # fmt: skip
    "PixelDiffusionPipeline": """import torch
from emu_pixel_diffusion import PixelDiffusionPipeline  # pip install emu-pixel-diffusion

pipe = PixelDiffusionPipeline.from_pretrained("{repo}")
image = pipe(["{prompt}"], generator=[torch.Generator().manual_seed(0)]).images[0]""",
    "AmusedPipeline": """import emu_masked_transformer.uvit  # pip install emu-masked-transformer
import torch
from diffusers import AmusedPipeline

pipe = AmusedPipeline.from_pretrained("{repo}")
image = pipe("{prompt}", generator=torch.Generator().manual_seed(0)).images[0]""",
}
EMU_LOADING = """# pip install emu-cli and the backend's plugin, then:
emu generate --model {repo} "{prompt}" -n 4"""
PROMPT = "a red star on a sunset background"
SAMPLES = "samples.png"


def _resolution(provenance: Provenance) -> int:
    recipes = provenance.recipes
    tuned = provenance.quality_tuning
    stage = (tuned.stage if tuned else None) or provenance.stage
    recipe = recipes.get("quality-tune") or recipes.get(stage or "") or {}
    return int(recipe.get("resolution", 64))


def evaluation_table(results: dict[str, Any]) -> str:
    """The paper's form, as a Markdown table, from an ``emu evaluate`` results.json."""
    lines = [
        "| protocol | prompts | A preferred | B preferred | ties | pairs |",
        "|---|---|---|---|---|---|",
    ]
    for protocol, subsets in results["protocols"].items():
        for subset, rate in subsets.items():
            if rate["pairs"]:
                lines.append(
                    f"| {protocol} | {subset} | {100 * rate['a']:.1f}% | {100 * rate['b']:.1f}% "
                    f"| {100 * rate['tie']:.1f}% | {rate['pairs']} |"
                )
    return "\n".join(lines)


def model_card(
    checkpoint: Path,
    repo: str,
    *,
    base_model: str | None = None,
    datasets: list[str] | None = None,
    evaluation: dict[str, Any] | None = None,
    has_samples: bool = False,
) -> Any:
    """A ``huggingface_hub.ModelCard`` for an emu checkpoint folder."""
    from huggingface_hub import ModelCard, ModelCardData

    provenance = Provenance.read(Path(checkpoint))
    base_model = base_model or provenance.parent_repo
    backend = provenance.backend
    tuning = provenance.quality_tuning
    tags = ["emu", f"emu-{backend}", "text-to-image"]
    if tuning:
        tags.append("quality-tuning")
    data = ModelCardData(
        library_name="diffusers",
        pipeline_tag="text-to-image",
        tags=tags,
        base_model=base_model,
        datasets=datasets or None,
        license="apache-2.0",
    )
    size = _resolution(provenance)
    index = Path(checkpoint) / "model_index.json"
    pipeline = json.loads(index.read_text()).get("_class_name") if index.is_file() else None
    snippet = LOADING.get(pipeline or "", EMU_LOADING).format(
        repo=repo, prompt=PROMPT, size=size, pipeline=pipeline
    )
    kind = "quality-tuned" if tuning else "pre-trained"
    sections = [
        f"# {repo.split('/')[-1]}",
        f"A {kind} `{backend}` text-to-image model made with "
        "[emu](https://pypi.org/project/emu-cli/), a toolkit for the Emu quality-tuning recipe "
        "(Dai et al., 2023: pre-train, curate a few thousand very appealing images, "
        "fine-tune on them).",
    ]
    if has_samples:
        sections.append(f"![samples]({SAMPLES})")
    sections += ["## How to use", f"```python\n{snippet}\n```"]
    data_record = provenance.data
    if tuning and data_record:
        curve = tuning.curve or {}
        sections += [
            "## Quality-tuning",
            f"Fine-tuned from `{base_model or provenance.parent}` on "
            f"{data_record.samples} curated images (data fingerprint "
            f"`{data_record.fingerprint}`). It trained {tuning.steps_trained} "
            f"steps; the checkpoint is step {tuning.chosen_step}, chosen by the "
            f"`{tuning.judge}` judge's appeal with a faithfulness margin of "
            f"{curve.get('faithfulness_margin')}"
            + (f" (stopped early: {tuning.stopped_early})." if tuning.stopped_early else "."),
        ]
    table = [
        "| stage | steps | batch | learning rate | resolution | noise offset | EMA |",
        "|---|---|---|---|---|---|---|",
    ]
    for stage, recipe in provenance.recipes.items():
        if "steps" not in recipe:  # a stage of an adopted model: only its size is known
            table.append(f"| {stage} | trained elsewhere | | | {recipe.get('resolution')} | | |")
            continue
        table.append(
            f"| {stage} | {recipe['steps']} | {recipe['batch_size']} | "
            f"{recipe['learning_rate']} | {recipe['resolution']} | {recipe['noise_offset']} | "
            f"{recipe['ema_decay']} |"
        )
    sections += ["## Recipe", "Per stage, as `emu.json` records it:", "\n".join(table)]
    data_lines = []
    if data_record:
        data_lines.append(
            f"- training data: `{data_record.source}`, {data_record.samples} samples, "
            f"fingerprint `{data_record.fingerprint}`"
        )
    pre = provenance.pretraining_data
    if pre:
        data_lines.append(
            f"- pre-training data: {pre.samples} samples, fingerprint `{pre.fingerprint}`"
        )
    filters = _filter_thresholds(Path(data_record.source)) if data_record else None
    if filters:
        data_lines.append(f"- automatic filters: {filters}")
    sections += ["## Data", "\n".join(data_lines)]
    if evaluation:
        sections += [
            "## Evaluation",
            "Side by side against its parent with the paper's protocol (A: this model, B: "
            f"`{evaluation['b']}`; {evaluation['annotators']} annotators, prompts "
            f"`{evaluation['prompts']}`):",
            evaluation_table(evaluation),
        ]
    sections += ["## Provenance", f"```json\n{json.dumps(_provenance(provenance), indent=2)}\n```"]
    return ModelCard.from_template(
        data, template_str="---\n{{ card_data }}\n---\n\n" + "\n\n".join(sections) + "\n"
    )


def _provenance(provenance: Provenance) -> dict[str, Any]:
    keep = ("backend", "preset", "stages_completed", "steps", "parent", "emu_version", "saved_at")
    record = provenance.to_dict()
    return {k: record[k] for k in keep if k in record}


def _filter_thresholds(data: Path) -> str | None:
    """The thresholds of the `emu filter` run whose kept folder (or a later stage of it, kept
    beside it) this model trained on, when its report is at hand."""
    for folder in (data, *data.parents[:3]):
        summaries = [folder / "report" / "summary.json", *folder.glob("*/report/summary.json")]
        for summary in (s for s in summaries if s.is_file()):
            filters = json.loads(summary.read_text()).get("filters")
            if filters:
                return "; ".join(f"{name} ({_options(config)})" for name, config in filters.items())
    return None


def _options(config: dict[str, Any]) -> str:
    """A filter's settings and the threshold it was given, e.g. ``keep_fraction 0.6``."""
    chosen = {**config.get("settings", {}), **config.get("threshold", {})}
    return ", ".join(f"{k} {v}" for k, v in chosen.items() if v is not None and v != [])


def clip_card(folder: Path, repo: str, *, with_head: bool = False) -> Any:
    """A ``huggingface_hub.ModelCard`` for a CLIP folder from ``emu filter train-clip``: how
    to load it (and the aesthetic head pushed with it), and the training record it carries."""
    from huggingface_hub import ModelCard, ModelCardData

    from emu_cli.curate.aesthetic import HUB_HEAD
    from emu_cli.curate.clip import RECORD_FILE

    record = json.loads((Path(folder) / RECORD_FILE).read_text())
    data = ModelCardData(
        library_name="open_clip",
        pipeline_tag="zero-shot-image-classification",
        tags=["emu", "clip", "curation"],
        license="apache-2.0",
    )
    body = "\n\n".join([
        f"# {repo.split('/')[-1]}",
        "A small CLIP trained by [emu](https://pypi.org/project/emu-cli/)'s `emu filter "
        "train-clip` on an image pool's own image-caption pairs, for the automatic curation "
        "stage (CLIP score, concept balance, aesthetic head) where no pretrained CLIP can be "
        "downloaded. It knows the pool it was trained on, not the world at large.",
        "## How to use",
        f'```python\nimport open_clip\n\nmodel, _, preprocess = open_clip.create_model_and_'
        f'transforms("hf-hub:{repo}")\ntokenizer = open_clip.get_tokenizer("hf-hub:{repo}")\n```',
        f"```\nemu filter --data POOL --out RUN --clip-model hf-hub:{repo}"
        + (f" \\\n    --set aesthetic.weights=hf-hub:{repo}/{HUB_HEAD}" if with_head else "")
        + "\n```",
        *(
            [f"`{HUB_HEAD}` is a LAION-style aesthetic head on this model's image embeddings "
             "(its record, `aesthetic.json`, gives the ratings it learned from)."]
            if with_head else []
        ),
        "## Training",
        f"{record['steps']} steps at batch {record['batch_size']} (learning rate "
        f"{record['learning_rate']}, seed {record['seed']}) on {record['samples']} samples of "
        f"`{record['data']}` (data fingerprint `{record['data_fingerprint']}`): "
        f"{record['passes']} passes over the pool, final loss {record['final_loss']}.",
    ])  # fmt: skip
    return ModelCard.from_template(data, template_str="---\n{{ card_data }}\n---\n\n" + body + "\n")


def dataset_card(folder: Path, repo: str) -> Any:
    from huggingface_hub import DatasetCard, DatasetCardData

    lines = [line for line in (Path(folder) / "metadata.jsonl").read_text().splitlines() if line]
    data = DatasetCardData(
        task_categories=["text-to-image"],
        tags=["emu", "quality-tuning", "curated"],
        size_categories=["n<1K" if len(lines) < 1000 else "1K<n<10K"],
        license="apache-2.0",
    )
    body = (
        f"# {repo.split('/')[-1]}\n\nA curated image-caption set made with emu for "
        f"quality-tuning: {len(lines)} images in an image folder with `metadata.jsonl`.\n\n"
        "```python\nfrom datasets import load_dataset\n\n"
        f'dataset = load_dataset("{repo}", split="train")\n```\n'
    )
    return DatasetCard.from_template(data, template_str="---\n{{ card_data }}\n---\n\n" + body)
