"""``make demo``: the paper end to end, through the same CLI commands a user types.

Synthesize a pool of the built-in world -> pre-train every installed backend -> automatic
filtering -> generalist and specialist stages (simulated annotators) -> quality-tune each
backend -> evaluate quality-tuned against pre-trained with the paper's side-by-side protocol.
Prints one table and writes it to ``OUT/results.json``. Every stage already done is reused
when it is run again (a killed run resumes).
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import time
from pathlib import Path

CONFIGS = Path(__file__).resolve().parent.parent / "configs"
SCALES = {
    # quick: 2 CPU cores in about 57 minutes (the aim is 45). Images are drawn at 64 px (the
    # filters read text and shapes there) and every model trains and generates at 32 px.
    "quick": {
        "preset": "small",
        "pool": 5000,
        "size": 64,
        "resolution": 32,
        # Recipe fields per backend and stage, over the preset's. Measured on 2 cores at
        # 32 px: latent autoencoder 105 img/s, denoiser 85, pixel 44, masked transformer 40.
        "pretrain": {
            # The first stages get their presets' full 1,500 steps: after 300-400 they decoded
            # every image in gray (curated set: autoencoder 18.5 dB -> 23.4 dB, tokenizer
            # 17.1 dB -> 21.2 dB), and quality-tuning the model above them gained nothing.
            "latent": {"autoencoder": {"steps": 1500}, "denoiser": {"steps": 700}},
            "pixel": {"denoiser": {"steps": 700}},
            "masked": {
                "tokenizer": {"steps": 1500},
                "transformer": {"steps": 600, "batch_size": 32},
            },
        },
        # bf16 autocast where the CPU computes in bf16 natively (measured on this one: latent
        # autoencoder 85 -> 129 img/s, pixel denoiser 46 -> 54, same loss); else full precision.
        "mixed_precision": "auto",
        "clip_steps": 150,
        "ratings": 1000,
        "keep_rates": (0.3, 0.3),
        "qt": ["--steps", 300, "--validate-every", 25],
    },
    # tiny: a smoke test of every stage in a few minutes; its numbers mean nothing.
    "tiny": {
        "preset": "tiny",
        "pool": 400,
        "size": 64,
        "resolution": None,  # each preset's own (the pixel one has a super-resolution stage)
        "pretrain": {},
        "mixed_precision": "no",
        "clip_steps": 20,
        "ratings": 200,
        "keep_rates": (0.5, 0.5),
        "qt": ["--validate-every", 4, "--validation-steps", 4],
    },
    # gpu: the presets' own schedules on a pool the size of the paper's automatic stage output.
    "gpu": {
        "preset": "base",
        "pool": 200_000,
        "size": 256,
        "resolution": None,
        "pretrain": {},
        "mixed_precision": "bf16",
        "clip_steps": 5000,
        "ratings": 20_000,
        "keep_rates": (0.1, 0.1),
        "qt": [],
    },
}


# Stages that train in float32 whatever the scale's precision: in bf16 the masked tokenizer's
# loss after 60 steps was 0.132 against 0.108 (its nearest-code search is precision-bound).
FLOAT32_STAGES = {"masked": {"tokenizer"}}


def training_precision(wanted: str) -> str:
    """``auto``: bf16 where the CPU has native bf16 arithmetic, full precision elsewhere (bf16
    emulated in software is slower than float32)."""
    if wanted != "auto":
        return wanted
    import torch

    try:
        native = torch.ops.mkldnn._is_mkldnn_bf16_supported()
    except (AttributeError, RuntimeError):
        native = False
    return "bf16" if native else "no"


def emu(*args: object) -> None:
    command = [sys.executable, "-m", "emu_cli", *map(str, args)]
    print("$ emu " + shlex.join(command[3:]), flush=True)
    subprocess.run(command, check=True)


def done(path: Path) -> bool:
    return path.exists()


def curate(out: Path, scale: dict) -> Path:
    """The automatic stage, then the two human stages; returns the final curated folder."""
    pool, models = out / "pool", out / "curation" / "models"
    clip, head = models / "clip", models / "aesthetic.safetensors"
    if not done(head):
        emu("filter", "train-models", "--data", pool, "--out", models,
            "--clip-steps", scale["clip_steps"], "--rated", scale["ratings"])  # fmt: skip
    automatic = out / "curation" / "automatic"
    if not done(automatic / "kept" / "metadata.jsonl"):
        config = CONFIGS / "filters-demo.yaml"
        emu("filter", "--data", pool, "--out", automatic, "--clip-model", clip,
            "--config", config, "--set", f"aesthetic.weights={head}")  # fmt: skip
    source = automatic / "kept"
    for stage, keep_rate in zip(("generalist", "specialist"), scale["keep_rates"], strict=True):
        target = out / "curation" / stage
        if not done(target / "metadata.jsonl"):
            emu("data", "simulate-review", "--data", source, "--stage", stage,
                "--keep-rate", keep_rate, "--out", target,
                "--store", out / "curation" / "annotations.sqlite")  # fmt: skip
        source = target
    return source


def pretrain(out: Path, name: str, scale: dict) -> Path:
    run = out / name / "pre"
    if done(run / "emu.json") and not (run / "stages").is_dir():
        return run
    config = out / name / "pretrain.yaml"
    config.parent.mkdir(parents=True, exist_ok=True)
    lines = ["checkpoint_every: 100", "preview_every: 200"]
    lines.append(f"mixed_precision: {scale['mixed_precision']}")
    if scale["resolution"]:
        lines.append(f"resolution: {scale['resolution']}")
    stages = {stage: dict(fields) for stage, fields in scale["pretrain"].get(name, {}).items()}
    for stage in FLOAT32_STAGES.get(name, set()):
        stages.setdefault(stage, {})["mixed_precision"] = "no"
    if stages:
        lines.append("stages_recipe:")
        lines += [f"  {stage}: {json.dumps(fields)}" for stage, fields in stages.items()]
    config.write_text("\n".join(lines) + "\n")
    resume = ["--resume", "latest"] if (run / "stages").is_dir() else []
    emu("pretrain", "--backend", name, "--preset", scale["preset"], "--data", out / "pool",
        "--out", run, "--config", config, *resume)  # fmt: skip
    return run


def quality_tune(out: Path, name: str, curated: Path, scale: dict, subset: int | None) -> Path:
    run = out / name / ("qt" if subset is None else f"qt-{subset}")
    if done(run / "emu.json"):
        return run
    resume = ["--resume", "latest"] if (run / "stages").is_dir() else []
    extra = ["--subset", subset] if subset else []
    emu("quality-tune", "--model", out / name / "pre", "--data", curated, "--out", run,
        "--mixed-precision", scale["mixed_precision"], *scale["qt"], *extra, *resume)  # fmt: skip
    return run


def training_seconds(run: Path) -> float:
    """Seconds spent training the stages of a run folder, from their summaries (elapsed =
    images seen / images per second), so that a run resumed across invocations counts once."""
    total = 0.0
    for summary_file in (run / "stages").glob("*/summary.json"):
        summary = json.loads(summary_file.read_text())
        recipe = json.loads((summary_file.parent.parent.parent / "emu.json").read_text())[
            "recipes"
        ][summary_file.parent.name]
        seen = summary["steps"] * recipe["batch_size"] * summary.get("processes", 1)
        total += seen / summary["images_per_second"] if summary["images_per_second"] else 0.0
    return total


def row(name: str, qt: Path, evaluation: Path, wall: float) -> dict:
    results = json.loads((evaluation / "results.json").read_text())
    appeal, faith = results["protocols"]["appeal"], results["protocols"]["faithfulness"]
    tuning = json.loads((qt / "emu.json").read_text())["quality_tuning"]
    return {
        "backend": name,
        "appeal_qt": appeal["all"]["a"],
        "appeal_pre": appeal["all"]["b"],
        "appeal_tie": appeal["all"]["tie"],
        "faith_qt": faith["all"]["a"],
        "faith_pre": faith["all"]["b"],
        "faith_tie": faith["all"]["tie"],
        "appeal_qt_unseen": appeal.get("unseen", {}).get("a"),
        "appeal_pre_unseen": appeal.get("unseen", {}).get("b"),
        "qt_steps": tuning["chosen_step"],
        "wall_s": round(wall, 1),
        "appeal_qt_interval": appeal["all"]["interval"]["a"],
        "report": str(evaluation / "report.html"),
    }


def print_table(rows: list[dict]) -> None:
    def share(value: float | None) -> str:
        return "  -  " if value is None else f"{100 * value:4.1f}%"

    print(
        f"\n{'backend':8} | {'visual appeal QT/pre/tie':26} | {'faithfulness QT/pre/tie':26} | "
        f"{'appeal unseen QT/pre':20} | {'QT steps':8} | wall s"
    )
    for r in rows:
        print(
            f"{r['backend']:8} | {share(r['appeal_qt'])} / {share(r['appeal_pre'])} / "
            f"{share(r['appeal_tie'])}  | {share(r['faith_qt'])} / {share(r['faith_pre'])} / "
            f"{share(r['faith_tie'])}  | {share(r['appeal_qt_unseen'])} / "
            f"{share(r['appeal_pre_unseen'])}      | {r['qt_steps']:8} | {r['wall_s']:.0f}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("runs/demo"))
    parser.add_argument("--scale", choices=sorted(SCALES), default="quick")
    parser.add_argument("--backends", nargs="*", help="default: every installed backend")
    parser.add_argument(
        "--qt-subset",
        type=int,
        help="the paper's data-size ablation: also quality-tune on N random curated images",
    )
    args = parser.parse_args()
    scale = dict(SCALES[args.scale])
    scale["mixed_precision"] = training_precision(scale["mixed_precision"])
    from emu_cli.plugins import get_backends

    started = time.perf_counter()
    backends = args.backends or sorted(get_backends())
    out: Path = args.out
    if not done(out / "pool" / "metadata.jsonl"):
        emu("data", "synth", "--n", scale["pool"], "--size", scale["size"], "--seed", 0,
            "--out", out / "pool")  # fmt: skip
    shared = time.perf_counter() - started
    for name in backends:
        pretrain(out, name, scale)
    began = time.perf_counter()
    curated = curate(out, scale)
    shared += time.perf_counter() - began
    rows = []
    subsets = [None] + ([args.qt_subset] if args.qt_subset else [])
    for name in backends:
        for subset in subsets:
            qt = quality_tune(out, name, curated, scale, subset)
            evaluation = qt.parent / f"eval-{qt.name}"
            began = time.perf_counter()
            emu("evaluate", "--a", qt, "--b", out / name / "pre", "--prompts", "builtin:world",
                "--out", evaluation)  # fmt: skip
            # Training time from the run folders; evaluation and the shared curation as timed.
            trained = training_seconds(out / name / "pre") + training_seconds(qt)
            wall = trained + time.perf_counter() - began + shared / len(backends)
            rows.append(row(name if subset is None else f"{name}@{subset}", qt, evaluation, wall))
    (out / "results.json").write_text(json.dumps(rows, indent=2))
    print_table(rows)
    print(f"\nresults: {out / 'results.json'}; total {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
