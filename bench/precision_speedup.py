"""Images/s of emu's trainer with bf16 autocast against full precision, per backend and stage,
one process, one run.

Each stage trains the same freshly built model three times on the same synthesized data:
float32, bf16, float32; the ratio uses the mean of the two float32 runs, so warm-up and drift
favour neither. The final losses are printed beside the rates: bf16 must not change what is
learned. On a CPU without native bf16 arithmetic the ratio falls below 1, which is why
`make demo` asks for bf16 only where the CPU has it (``examples/demo.py, training_precision``).

    python bench/precision_speedup.py                      # every stage of every backend
    python bench/precision_speedup.py --backend latent --stage autoencoder
    python bench/precision_speedup.py --device cuda --batch-size 128   # on a GPU
"""

from __future__ import annotations

from train_throughput import recipe_comparison

if __name__ == "__main__":
    recipe_comparison(
        __doc__.splitlines()[0],
        ("float32", {"mixed_precision": "no"}),
        ("bf16", {"mixed_precision": "bf16"}),
    )
