"""Does more pre-training, or a larger pool, make a backend draw what the caption names?

Pre-trains several runs side by side (made for one GPU, whose small-preset steps are bound by
kernel launches, so runs sharing it lose little), each through ``emu pretrain`` at 32 px in
float32 with its own pool, generator-stage steps and batch, and judges each as soon as it
finishes with the world's faithfulness judge (``validate_generator``, the held-in subjects).
Earlier stages (the masked tokenizer, the latent autoencoder) keep their preset's steps.

    python bench/pretrain_scaling.py --out gpu-scaling --device cuda \\
        --pool pool5k=5000 --pool pool20k=20000 \\
        --run pixel:pool5k:1500:256 --run pixel:pool20k:1500:256 --run pixel:pool20k:3000:256

``--pool NAME=N`` draws N world images at 64 px (seed 0, so a smaller pool is the start of a
larger one) into OUT/NAME unless it is there; ``--run BACKEND:POOL:STEPS:BATCH[:LR][:K=V...]``
names a pool by NAME or path (LR, the generator stage's learning rate, defaults to the
preset's; each K=V is a backend option, ``--option K=V``, e.g. text_encoder_lr_scale=0.1). The
table and ``OUT/scaling.json`` grow as runs finish, so a run cut short still leaves the figures
of those done. ``--validate-every N`` also records each run's judged curve as it trains (``emu
pretrain --validate-every``: appeal and faithfulness of the validation prompts every N steps),
so one run shows where its faithfulness stops rising; the curve goes into the run's row.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import yaml

from emu_cli.checkpoint.folder import read_provenance
from emu_cli.plugin.registry import get_backend
from emu_cli.runtime import quiet_libraries
from emu_cli.world.synth import synthesize
from emu_cli.world.validation import pool_records, validate_generator

RESOLUTION = 32  # the demo's generation size, where the small presets are measured


@dataclass(frozen=True)
class Run:
    backend: str
    pool: Path
    steps: int
    batch_size: int
    learning_rate: float | None = None  # None: the preset's
    options: tuple[str, ...] = ()  # backend options, KEY=VALUE

    @property
    def name(self) -> str:
        name = f"{self.backend}-{self.pool.name}-{self.steps}x{self.batch_size}"
        if self.learning_rate is not None:
            name += f"-lr{self.learning_rate:g}"
        return "-".join([name, *(option.replace("=", "") for option in self.options)])


def parse_pool(spec: str) -> tuple[str, int]:
    name, _, count = spec.partition("=")
    if not name or not count.isdigit():
        raise SystemExit(f"--pool '{spec}': expected NAME=N, e.g. pool20k=20000")
    return name, int(count)


def parse_run(spec: str, pools: dict[str, Path]) -> Run:
    parts = spec.split(":")
    options = tuple(part for part in parts[4:] if "=" in part)
    parts = parts[:4] + [part for part in parts[4:] if "=" not in part]
    if len(parts) not in (4, 5) or not parts[2].isdigit() or not parts[3].isdigit():
        raise SystemExit(
            f"--run '{spec}': expected BACKEND:POOL:STEPS:BATCH[:LR][:KEY=VALUE...] "
            "(pixel:p:1500:256:2e-3:text_encoder_lr_scale=0.1)"
        )
    backend, pool, steps, batch = parts[:4]
    learning_rate = None
    if len(parts) == 5:
        try:
            learning_rate = float(parts[4])
        except ValueError:
            learning_rate = float("nan")
        if not learning_rate > 0:  # also false for nan
            raise SystemExit(f"--run '{spec}': learning rate '{parts[4]}' is not a positive number")
    get_backend(backend)  # an unknown backend fails here, naming the installed ones
    path = pools.get(pool, Path(pool))
    if pool not in pools and not (path / "metadata.jsonl").is_file():
        raise SystemExit(f"--run '{spec}': '{pool}' is neither a --pool name nor a pool folder")
    return Run(backend, path, int(steps), int(batch), learning_rate, options)


def run_config(run: Run) -> dict:
    """The run's recipe: its steps and batch for the generator stage, its batch elsewhere."""
    backend = get_backend(run.backend)
    generator = backend.generator_stage()
    stages = {s.name: {"batch_size": run.batch_size} for s in backend.stages}
    stages[generator]["steps"] = run.steps
    if run.learning_rate is not None:
        stages[generator]["learning_rate"] = run.learning_rate
    return {
        "resolution": RESOLUTION,
        "mixed_precision": "no",
        # one checkpoint midway: a crash loses half a run, and writing is cheap against it
        "checkpoint_every": max(run.steps // 2, 1),
        "preview_every": run.steps,
        "stages_recipe": stages,
    }


def start(run: Run, args: argparse.Namespace) -> subprocess.Popen:
    out = args.out
    folder = out / run.name
    folder.mkdir(parents=True, exist_ok=True)
    config = out / f"{run.name}.yaml"  # not with_suffix: a run's name may hold "lr0.002"
    config.write_text(yaml.safe_dump(run_config(run)))
    command = [sys.executable, "-m", "emu_cli", "pretrain", "--backend", run.backend,
               "--preset", args.preset, "--data", str(run.pool), "--out", str(folder),
               "--config", str(config), "--device", args.device]  # fmt: skip
    if args.validate_every:
        command += ["--validate-every", str(args.validate_every)]
    for option in run.options:
        command += ["--option", option]
    with (out / f"{run.name}.log").open("w") as log:  # the child keeps its own handle
        return subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)


def judged(run: Run, args: argparse.Namespace, seconds: float) -> dict:
    folder = args.out / run.name
    stage = get_backend(run.backend).generator_stage()
    summary = json.loads((folder / "stages" / stage / "summary.json").read_text())
    figures = validate_generator(folder, per_subject=args.per_subject, guidance=args.guidance,
                                 device=args.device)  # fmt: skip
    curve = folder / "stages" / stage / "curve.json"
    if curve.is_file():
        figures["curve"] = json.loads(curve.read_text())["points"]
    return {
        "run": run.name,
        "backend": run.backend,
        "pool_images": len(pool_records(run.pool)),
        "steps": run.steps,
        "batch_size": run.batch_size,
        "learning_rate": read_provenance(folder).recipes[stage]["learning_rate"],
        "options": list(run.options),
        "images_seen": run.steps * run.batch_size,
        "images_per_second": round(summary["images_per_second"], 1),
        "final_loss": summary["final_loss"],
        "minutes": round(seconds / 60, 2),  # from the start of all runs to this one's end
        "sampling_steps": figures.pop("steps"),
        **figures,
    }


COLUMNS = (  # key, header, width, format
    ("pool_images", "pool", 7, ""), ("images_seen", "images seen", 11, ","),
    ("images_per_second", "img/s", 7, ".0f"), ("minutes", "min", 6, ".1f"),
    ("subject_accuracy", "subject", 7, ".3f"), ("color_accuracy", "color", 7, ".3f"),
    ("background_accuracy", "bg", 7, ".3f"), ("all_accuracy", "all", 7, ".3f"),
    ("mean_appeal", "appeal", 7, ".3f"),
)  # fmt: skip


def print_row(row: dict) -> None:
    cells = (f"{row[key]:>{width}{spec}}" for key, _, width, spec in COLUMNS)
    print(f"{row['run']:28} " + " ".join(cells), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("gpu-scaling"))
    parser.add_argument("--pool", action="append", default=[], help="NAME=N (repeatable)")
    parser.add_argument(
        "--run", action="append", required=True, help="BACKEND:POOL:STEPS:BATCH[:LR][:K=V...]"
    )
    parser.add_argument("--preset", default="small")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--per-subject", type=int, default=16)
    parser.add_argument("--guidance", type=float, help="default: the backend's")
    parser.add_argument("--validate-every", type=int, help="record each run's judged curve")
    args = parser.parse_args()
    quiet_libraries()
    args.out.mkdir(parents=True, exist_ok=True)
    pools = {}
    for name, count in map(parse_pool, args.pool):
        pools[name] = args.out / name
        if not (pools[name] / "metadata.jsonl").is_file():
            synthesize(count, pools[name], seed=0, size=64, report=False)
    runs = [parse_run(spec, pools) for spec in args.run]
    started = time.perf_counter()
    running = {run: start(run, args) for run in runs}
    headers = (f"{header:>{width}}" for _, header, width, _ in COLUMNS)
    print(f"{'run':28} " + " ".join(headers), flush=True)
    rows, failed = [], []
    while running:
        time.sleep(2)
        for run, process in list(running.items()):
            if process.poll() is None:
                continue
            del running[run]
            if process.returncode:
                failed.append(run.name)
                print(f"{run.name}: exit {process.returncode}, see {args.out / run.name}.log")
                continue
            rows.append(judged(run, args, time.perf_counter() - started))
            print_row(rows[-1])
            (args.out / "scaling.json").write_text(json.dumps(rows, indent=2))
    print(json.dumps(rows))
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
