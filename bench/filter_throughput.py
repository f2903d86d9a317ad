"""Images/s of the full `emu filter` pipeline against decoding the same files (the ceiling).

Both use the same worker processes (local engine, one per core) over the same pool at 256 px:
- decode only: read and decode every file once, nothing else;
- full pipeline: index, decode, size, exact and near duplicates, OCR, aesthetic head, CLIP
  score, concept balance, manifest, kept folder and report, as configs/filters-world.yaml
  sets them (at 256 px).
Their ratio says how much of the machine goes to filtering beyond decoding. Target: at least
100 images/s for the full pipeline on 2 cores.

The CLIP model and aesthetic head it needs are trained first on the pool (not timed), unless
given. Run:

    python bench/filter_throughput.py --n 10000

With ``--unscreened`` the same run also times the pipeline with OCR's text screen off, and
prints the screen's gain as a ratio.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from emu_cli.curate.engines import open_engine
from emu_cli.curate.pipeline import FilterRun, FilterSpec
from emu_cli.curate.resources import Resources
from emu_cli.data import index_dataset
from emu_cli.data.dataset import read_image
from emu_cli.world.synth import synthesize

CONFIG = Path(__file__).parent.parent / "configs" / "filters-world.yaml"


def decode_chunk(samples: list) -> int:
    """Decode a chunk and nothing else, as the pipeline's workers decode."""
    return sum(read_image(sample).width > 0 for sample in samples)


def decode_rate(pool: Path, workers: int, chunk_size: int) -> float:
    samples = index_dataset(pool).samples
    tasks = {
        n: samples[start : start + chunk_size]
        for n, start in enumerate(range(0, len(samples), chunk_size))
    }
    with open_engine("local", workers) as engine:
        list(engine.run(decode_chunk, {0: tasks[0]}))  # start the workers, untimed
        started = time.perf_counter()
        list(engine.run(decode_chunk, tasks))
        return len(samples) / (time.perf_counter() - started)


def emu(*args: object) -> None:
    subprocess.run([sys.executable, "-m", "emu_cli", *map(str, args)], check=True)


def models(pool: Path, folder: Path) -> tuple[Path, Path]:
    """A CLIP and an aesthetic head trained on the pool, in a child process as a user would
    (training inside this process left its thread pools competing with the workers)."""
    emu("filter", "train-models", "--data", pool, "--out", folder, "--clip-steps", 150,
        "--clip-batch-size", 64, "--num-rated", 1000)  # fmt: skip
    return folder / "clip", folder / "aesthetic.safetensors"


def pipeline_rate(
    pool: Path,
    out: Path,
    clip: Path,
    head: Path,
    args: argparse.Namespace,
    changes: dict | None = None,
) -> tuple[float, int]:
    """Images/s of the whole `emu filter` run as configs/filters-world.yaml sets it (with
    ``changes`` to some filters' options), and how many images it kept."""
    configured = yaml.safe_load(CONFIG.read_text())["filters"]
    configured["aesthetic"]["weights"] = str(head)
    for name, options in (changes or {}).items():
        configured[name] = {**configured[name], **options}
    specs = [FilterSpec(name, options) for name, options in configured.items()]
    run = FilterRun(
        pool, out, specs, Resources(str(clip)),
        workers=args.workers, chunk_size=args.chunk_size, progress=False,
    )  # fmt: skip
    started = time.perf_counter()
    outcome = run.run()
    return outcome.total / (time.perf_counter() - started), outcome.kept


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=10000, help="pool size")
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--workers", type=int, default=os.cpu_count())
    parser.add_argument("--chunk-size", type=int, default=256)
    parser.add_argument("--clip-model", help="CLIP folder (default: train one, untimed)")
    parser.add_argument("--aesthetic", help="aesthetic head (default: train one, untimed)")
    parser.add_argument(
        "--unscreened",
        action="store_true",
        help="also time the pipeline with OCR's text screen off (ocr.screen_side=0)",
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as temporary:
        folder = Path(temporary)
        pool = synthesize(args.n, folder / "pool", seed=123, size=args.size, report=False)
        clip, head = (
            (args.clip_model, args.aesthetic)
            if args.clip_model and args.aesthetic
            else models(pool, folder)
        )
        ceiling = decode_rate(pool, args.workers, args.chunk_size)
        full, kept = pipeline_rate(pool, folder / "run", clip, head, args)
        result = {
            "images": args.n,
            "size": args.size,
            "workers": args.workers,
            "decode_only_images_per_s": round(ceiling, 1),
            "full_pipeline_images_per_s": round(full, 1),
            "ratio": round(full / ceiling, 3),
            "kept": kept,
            "target_images_per_s": 100,
        }
        if args.unscreened:
            plain, plain_kept = pipeline_rate(
                pool, folder / "unscreened", clip, head, args, {"ocr": {"screen_side": 0}}
            )
            result |= {
                "without_ocr_screen_images_per_s": round(plain, 1),
                "ocr_screen_speedup": round(full / plain, 3),
                "kept_without_ocr_screen": plain_kept,
            }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
