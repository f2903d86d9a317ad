"""Images/s of emu's trainer under bf16 autocast with the math attention kernel against torch's
own choice (flash attention on a CPU), per backend and stage, one process, one run.

`Recipe.attention` "auto" picks the math kernel under bf16 on a CPU: torch's CPU flash-attention
backward is slow at the short sequences of these models. Each stage trains the same freshly
built model three times on the same synthesized data: torch's kernel, math, torch's kernel;
the ratio uses the mean of the two torch runs. The final losses are printed beside the rates:
the kernel must not change what is learned.

    python bench/attention_speedup.py --threads 1              # as each `make demo` job runs
    python bench/attention_speedup.py --threads 1 --precision no   # float32, as without bf16
    python bench/attention_speedup.py --backend masked --stage transformer
"""

from __future__ import annotations

from train_throughput import recipe_comparison

if __name__ == "__main__":
    recipe_comparison(
        __doc__.splitlines()[0],
        ("torch", {"mixed_precision": "bf16", "attention": "torch"}),
        ("math", {"mixed_precision": "bf16", "attention": "math"}),
    )
