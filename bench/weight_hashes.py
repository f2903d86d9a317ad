"""Hashes of the weights that a fixed-seed `tiny` pre-training and quality-tuning write, for
every backend: a refactor that should change no behaviour must leave them bit-identical.

    python bench/weight_hashes.py --record bench/weight_hashes.json   # before the change
    python bench/weight_hashes.py --check bench/weight_hashes.json    # after it

Each run goes through the real `emu` command in a child process, on the CPU, one thread, in
float32, so the figures depend on the torch build and the CPU's kernels alone: record and check
on the same machine and install. Prints one row per weight file and exits 1 on any difference.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

BACKENDS = ("latent", "pixel", "masked")
ENVIRONMENT = {"HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "CUBLAS_WORKSPACE_CONFIG": ":4096:8"}


def emu(*args: object) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "emu_cli", *map(str, args)],
        env={**os.environ, **ENVIRONMENT},
        capture_output=True,
        text=True,
    )
    if result.returncode:
        sys.exit(f"emu {' '.join(map(str, args))} failed:\n{result.stderr[-3000:]}")


def weight_hashes(run: Path) -> dict[str, str]:
    """sha256 of every safetensors file of a run's final model, by path inside the run."""
    hashes = {}
    for path in sorted(run.rglob("*.safetensors")):
        relative = path.relative_to(run).as_posix()
        if "/checkpoints/" in f"/{relative}":
            continue  # resumable state: the model folder holds what the run keeps
        hashes[relative] = hashlib.sha256(path.read_bytes()).hexdigest()
    return hashes


def measure(work: Path) -> dict[str, dict[str, str]]:
    world = work / "world"
    emu("data", "synth", "--num-images", 48, "--size", 32, "--seed", 3, "--out", world)
    results = {}
    for backend in BACKENDS:
        pretrained, tuned = work / f"{backend}-pretrained", work / f"{backend}-tuned"
        emu("pretrain", "--backend", backend, "--preset", "tiny", "--data", world,
            "--out", pretrained, "--device", "cpu", "--steps", 6, "--batch-size", 4,
            "--seed", 7, "--mixed-precision", "no")  # fmt: skip
        emu("quality-tune", "--model", pretrained, "--data", world, "--out", tuned,
            "--device", "cpu", "--steps", 4, "--batch-size", 4, "--no-early-stopping",
            "--mixed-precision", "no")  # fmt: skip
        results[f"{backend}/pretrain"] = weight_hashes(pretrained)
        results[f"{backend}/quality-tune"] = weight_hashes(tuned)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--record", type=Path, help="write the hashes to this JSON file")
    group.add_argument("--check", type=Path, help="compare against this JSON file")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as work:
        measured = measure(Path(work))
    if args.record:
        args.record.write_text(json.dumps(measured, indent=1, sort_keys=True) + "\n")
        print(f"recorded {sum(map(len, measured.values()))} weight files in {args.record}")
        return
    expected = json.loads(args.check.read_text())
    differences = 0
    for run in sorted(set(expected) | set(measured)):
        want, got = expected.get(run, {}), measured.get(run, {})
        for name in sorted(set(want) | set(got)):
            same = want.get(name) == got.get(name)
            differences += not same
            print(f"{'same     ' if same else 'DIFFERENT'} {run}: {name}")
    print(f"{differences} of {sum(map(len, expected.values()))} weight files differ")
    sys.exit(1 if differences else 0)


if __name__ == "__main__":
    main()
