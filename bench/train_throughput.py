"""Images/s of emu's shared trainer against a minimal plain-PyTorch loop, one process, one run.

The plain loop drives the same backend model and loss module on one fixed in-memory batch:
encode, forward, backward, AdamW step, nothing else. The trainer does everything it always
does (reading and decoding the data, accelerate, EMA, gradient clipping, LR schedule, logging).
Their ratio is the trainer's overhead; the target is >= 0.95. With ``--bare`` the trainer
leaves out EMA and gradient clipping too, so the ratio is the loop's own cost alone. The plain
loop runs before and after the trainer and the ratio uses their mean, so warm-up and drift do
not favour either.

    python bench/train_throughput.py                      # every installed backend
    python bench/train_throughput.py --backend pixel --preset small --stage denoiser
    python bench/train_throughput.py --device cuda --batch-size 128   # on a GPU
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import torch

from emu_cli.data import index_dataset
from emu_cli.data.dataset import TrainingDataset, collate
from emu_cli.plugin.registry import get_backend, get_backends
from emu_cli.runtime import quiet_libraries
from emu_cli.training.recipe import Recipe
from emu_cli.training.session import make_accelerator
from emu_cli.training.trainer import Trainer, step_seed
from emu_cli.world.synth import synthesize


def synchronize(device: torch.device) -> None:
    """GPU work is asynchronous: wait for it before reading the clock."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def plain_loop(backend, model, stage, recipe, images, captions, steps: int) -> float:
    device = model.device
    images = images.to(device)
    module = backend.training_module(model, stage, recipe)
    optimizer = torch.optim.AdamW(
        [p for p in module.parameters() if p.requires_grad], lr=recipe.learning_rate
    )
    for step in range(steps + 2):
        if step == 2:  # two warm-up steps, untimed
            synchronize(device)
            started = time.perf_counter()
        with torch.no_grad():
            batch = backend.encode(model, stage, images, captions)
        batch["generator"] = torch.Generator(device).manual_seed(step_seed(0, stage, step, 0))
        loss = module(batch)["loss"]
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    synchronize(device)
    return steps * len(images) / (time.perf_counter() - started)


def trainer_steps(folder: Path) -> list[dict]:
    records = [json.loads(line) for line in (folder / "log.jsonl").read_text().splitlines()]
    return [r for r in records if "loss" in r]


def trainer_rate(backend, model, stage, recipe, index, folder: Path, device: str) -> float:
    accelerator = make_accelerator(device, recipe, folder)
    Trainer(backend, model, stage, recipe, index, folder, accelerator).run(None)
    timed = trainer_steps(folder)
    # The trainer's own clock; like the plain loop, leave out the first two steps.
    first, last = timed[1], timed[-1]
    first_time = first["step"] * recipe.batch_size / first["images_per_second"]
    last_time = last["step"] * recipe.batch_size / last["images_per_second"]
    return (last["step"] - first["step"]) * recipe.batch_size / (last_time - first_time)


def bench_recipe(args: argparse.Namespace, resolution: int, **fields) -> Recipe:
    """A short stage with nothing but steps: no checkpoints or previews, one warm-up step."""
    return Recipe(
        steps=args.steps,
        batch_size=args.batch_size,
        resolution=resolution,
        warmup_steps=1,
        checkpoint_every=0,
        preview_every=0,
        **{"ema_decay": 0.999, **fields},
    ).validate()


def report(results: list[dict], columns: list[tuple[str, str, str]], json_path: Path | None):
    """A table of ``results`` (backend, stage, then each (key, header, format) column), the
    figures as JSON on the last line, and in ``json_path`` when given."""
    widths = [max(len(header), 9) for _, header, _ in columns]
    headers = zip(columns, widths, strict=True)
    print(f"{'backend':8} {'stage':12} " + " ".join(f"{h:>{w}}" for (_, h, _), w in headers))
    for r in results:
        cells = " ".join(
            f"{r[key]:>{width}{spec}}"
            for (key, _, spec), width in zip(columns, widths, strict=True)
        )
        print(f"{r['backend']:8} {r['stage']:12} {cells}")
    print(json.dumps(results))
    if json_path:
        json_path.write_text(json.dumps(results, indent=2))


def measure(backend, preset: str, stage: str, args: argparse.Namespace) -> dict:
    resolution = backend.stage(stage).defaults[preset]["resolution"]
    with tempfile.TemporaryDirectory() as folder:
        data = synthesize(512, Path(folder) / "data", seed=0, size=resolution)
        index = index_dataset(data)
        # --bare: without the two pieces of work the plain loop does not do
        work = {"ema_decay": 0.0, "max_grad_norm": 0.0} if args.bare else {}
        recipe = bench_recipe(
            args, resolution, caption_dropout=0.1, num_workers=args.workers, **work
        )
        torch.manual_seed(0)
        model = backend.build(preset, {}).to(torch.device(args.device))
        dataset = TrainingDataset(index, resolution)
        images, captions, _, _ = collate([dataset[i] for i in range(args.batch_size)])
        before = plain_loop(backend, model, stage, recipe, images, captions, args.steps)
        run = Path(folder) / "run"
        trained = trainer_rate(backend, model, stage, recipe, index, run, args.device)
        step_times = sorted(r["step_seconds"] for r in trainer_steps(run)[2:])
        after = plain_loop(backend, model, stage, recipe, images, captions, args.steps)
    plain = (before + after) / 2
    return {
        "backend": backend.name,
        "preset": preset,
        "stage": stage,
        "resolution": resolution,
        "batch_size": args.batch_size,
        "steps": args.steps,
        "device": device_name(args.device),
        "threads": torch.get_num_threads(),
        "plain_images_per_s": round(plain, 2),
        "plain_before": round(before, 2),
        "plain_after": round(after, 2),
        "trainer_images_per_s": round(trained, 2),
        "ratio": round(trained / plain, 3),
        "bare": args.bare,
        # a stall shows as a slowest step far above the median
        "trainer_median_step_s": round(step_times[len(step_times) // 2], 4),
        "trainer_slowest_step_s": round(step_times[-1], 4),
    }


def every_stage(args: argparse.Namespace) -> list[tuple[object, str]]:
    """(backend, stage) for each stage the options ask for: ``--stage`` of each ``--backend``,
    by default every stage of every installed backend."""
    return [
        (backend, stage)
        for backend in map(get_backend, args.backend or sorted(get_backends()))
        for stage in ([args.stage] if args.stage else backend.default_stages(args.preset, {}))
    ]


def compare_recipes(
    backend,
    preset: str,
    stage: str,
    args: argparse.Namespace,
    base: tuple[str, dict],
    trial: tuple[str, dict],
) -> dict:
    """One row: the trainer's images/s and final loss under two recipes (``base`` and ``trial``:
    a label and recipe fields over the bench's), each training the same freshly built model on
    the same data, run base, trial, base; the ratio uses the mean of the two base runs, so
    warm-up and drift favour neither."""
    from accelerate.state import AcceleratorState

    resolution = backend.stage(stage).defaults[preset]["resolution"]
    runs = []
    with tempfile.TemporaryDirectory() as folder:
        index = index_dataset(synthesize(512, Path(folder) / "data", seed=0, size=resolution))
        for i, (_, fields) in enumerate((base, trial, base)):
            if args.precision:  # the same precision for both recipes
                fields = {**fields, "mixed_precision": args.precision}
            recipe = bench_recipe(args, resolution, **fields)
            # accelerate keeps one precision per process; the runs here may change it.
            AcceleratorState._reset_state(reset_partial_state=True)
            torch.manual_seed(0)
            model = backend.build(preset, {})
            run = Path(folder) / f"run-{i}"
            rate = trainer_rate(backend, model, stage, recipe, index, run, args.device)
            runs.append((rate, trainer_steps(run)[-1]["loss"]))
    base_rate = (runs[0][0] + runs[2][0]) / 2
    (base_label, _), (trial_label, _) = base, trial
    return {
        "backend": backend.name,
        "stage": stage,
        "preset": preset,
        "resolution": resolution,
        "steps": args.steps,
        "device": device_name(args.device),
        "threads": torch.get_num_threads(),
        f"{base_label}_images_per_s": round(base_rate, 1),
        f"{trial_label}_images_per_s": round(runs[1][0], 1),
        "ratio": round(runs[1][0] / base_rate, 3),
        f"{base_label}_loss": runs[0][1],
        f"{trial_label}_loss": runs[1][1],
    }


def recipe_comparison(description: str, base: tuple[str, dict], trial: tuple[str, dict]) -> None:
    """A bench's whole run: ``compare_recipes`` for every stage the options ask for, as a table
    and as JSON."""
    args = bench_args(bench_parser(description, "default: every stage of each backend"))
    results = [
        compare_recipes(backend, args.preset, stage, args, base, trial)
        for backend, stage in every_stage(args)
    ]
    labels = [label for label, _ in (base, trial)]
    columns = [
        *[(f"{label}_images_per_s", f"{label} img/s", ".1f") for label in labels],
        ("ratio", "ratio", ".3f"),
        *[(f"{label}_loss", f"{label} loss", ".4f") for label in labels],
    ]
    report(results, columns, args.json)


def device_name(device: str) -> str:
    return torch.cuda.get_device_name(0) if device == "cuda" else f"cpu, {os.cpu_count()} cores"


def bench_parser(description: str, stage_help: str) -> argparse.ArgumentParser:
    """The options every trainer bench takes."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--backend", action="append", help="repeatable; default: all installed")
    parser.add_argument("--stage", help=stage_help)
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--preset", default="small")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's)")
    parser.add_argument("--precision", choices=["no", "bf16"],
                        help="training precision of every run (default: the bench's)")  # fmt: skip
    return parser


def bench_args(parser: argparse.ArgumentParser) -> argparse.Namespace:
    """Parse the options and set up the process as they ask."""
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    quiet_libraries()
    return args


def main() -> None:
    parser = bench_parser(__doc__.splitlines()[0], "default: each backend's last stage")
    parser.add_argument("--workers", type=int, default=-1, help="DataLoader workers; -1: auto")
    parser.add_argument(
        "--bare",
        action="store_true",
        help="the trainer without EMA and gradient clipping, which the plain loop leaves out",
    )
    args = bench_args(parser)
    names = args.backend or sorted(get_backends())
    results = []
    for name in names:
        backend = get_backend(name)
        stage = args.stage or backend.default_stages(args.preset, {})[-1]
        results.append(measure(backend, args.preset, stage, args))
    columns = [
        ("plain_images_per_s", "plain img/s", ".1f"),
        ("trainer_images_per_s", "trainer img/s", ".1f"),
        ("ratio", "ratio", ".3f"),
        ("trainer_median_step_s", "median step s", ".3f"),
        ("trainer_slowest_step_s", "slowest step s", ".3f"),
    ]
    report(results, columns, args.json)


if __name__ == "__main__":
    main()
