"""Resident memory while quality-tuning steps run, with a large frozen text encoder set aside
(what `emu quality-tune` does) against kept in memory: same model, data, cache and batch, each
in a child process, its resident set read at every training step.

The model is a Stable Diffusion folder built here with random weights: a small UNet and
autoencoder under a CLIP text encoder 1024 wide and 24 layers deep (354M parameters, 1.3 GiB in
float32: the size of SD 2's OpenCLIP-H text tower). On a GPU the same holds for the device's
memory; pass `--device cuda`.

    python bench/text_encoder_release.py
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

STEPS = 4


def build_folder(folder: Path) -> int:
    """The model; its text encoder's size in bytes."""
    from emu_latent_diffusion.foreign import save_tiny_stable_diffusion
    from transformers import CLIPTextConfig

    text = CLIPTextConfig(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24,
                          num_attention_heads=16)  # fmt: skip
    save_tiny_stable_diffusion(folder, text_config=text)
    return (folder / "text_encoder" / "model.safetensors").stat().st_size


def resident_mib() -> float:
    with open("/proc/self/statm") as handle:
        pages = int(handle.read().split()[1])
    return pages * resource.getpagesize() / 2**20


def child(folder: Path, data: Path, out: Path, keep: bool, device: str) -> None:
    """Quality-tune's steps as `emu quality-tune` runs them (cache warmed first), the text
    encoders set aside or kept; prints the resident MiB at each training step as JSON."""
    import torch
    from torch.nn.modules.module import register_module_forward_pre_hook

    from emu_cli.checkpoint.folder import load_checkpoint
    from emu_cli.data import index_dataset
    from emu_cli.data.dataset import TrainingDataset
    from emu_cli.training.cache import EncodingCache
    from emu_cli.training.recipe import Recipe
    from emu_cli.training.session import make_accelerator
    from emu_cli.training.set_aside import SetAside
    from emu_cli.training.trainer import Trainer

    backend, model, _ = load_checkpoint(folder)
    recipe = Recipe(steps=STEPS, batch_size=8, resolution=32, ema_decay=0, checkpoint_every=0,
                    preview_every=0, warmup_steps=1, aspect_buckets=False)  # fmt: skip
    accelerator = make_accelerator(device, recipe, out)
    model.to(accelerator.device)
    index = index_dataset(data)
    names = () if keep else backend.encoding_components(model, "denoiser")
    set_aside = SetAside(model, names, folder)
    cache = EncodingCache(backend, batch_size=recipe.batch_size, whole=set_aside.whole)
    view = TrainingDataset(index, recipe.resolution, caption_dropout=recipe.caption_dropout)
    cache.warm(model, "denoiser", view.variants(), view.variant_count())
    memory: list[float] = []

    def watch(module: torch.nn.Module, args: tuple) -> None:
        if type(module).__name__ == "UNet2DConditionModel" and torch.is_grad_enabled():
            if accelerator.device.type == "cuda":
                memory.append(torch.cuda.memory_allocated() / 2**20)
            else:
                memory.append(resident_mib())

    register_module_forward_pre_hook(watch)
    Trainer(backend, model, "denoiser", recipe, index, out, accelerator, encode=cache.encode,
            set_aside=set_aside).run(None)  # fmt: skip
    print(json.dumps({"set_aside": list(names), "memory": memory}))


def run_child(*args: object) -> dict:
    done = subprocess.run([sys.executable, __file__, "--child", *map(str, args)],
                          capture_output=True, text=True)  # fmt: skip
    if done.returncode:
        raise SystemExit(f"the child for {args[3]} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--child", nargs=5, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        folder, data, out, mode, device = args.child
        child(Path(folder), Path(data), Path(out), mode == "keep", device)
        return
    from emu_cli.world.synth import synthesize

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        size = build_folder(root / "model") / 2**20
        synthesize(64, root / "data", seed=1, size=32, workers=1)
        kept = run_child(root / "model", root / "data", root / "kept", "keep", args.device)
        aside = run_child(root / "model", root / "data", root / "aside", "release", args.device)
    during = {name: sorted(run["memory"])[len(run["memory"]) // 2]
              for name, run in (("kept", kept), ("set aside", aside))}  # fmt: skip
    print(f"text encoder: {size:,.0f} MiB; {aside['set_aside']} set aside; median "
          f"{'allocated' if args.device == 'cuda' else 'resident'} memory over {STEPS} training "
          f"steps ({args.device}, {os.cpu_count()} CPUs): kept {during['kept']:,.0f} MiB, set "
          f"aside {during['set aside']:,.0f} MiB: ratio {during['set aside'] / during['kept']:.3f}"
          f", {during['kept'] - during['set aside']:,.0f} MiB freed")  # fmt: skip


if __name__ == "__main__":
    main()
