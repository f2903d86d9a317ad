"""Shared by the core's tests (tests/) and each plugin's (plugins/*/tests/): the real `emu` command,
a small world, a tiny pre-trained model."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from click.testing import CliRunner

os.environ.setdefault("HF_HUB_OFFLINE", "1")
EMU = [sys.executable, "-m", "emu_cli"]
ARTIFACTS = Path(__file__).parent / "test-artifacts"


def emu(
    *args: str,
    check: bool = True,
    env: dict | None = None,
    timeout: int = 600,
    process: bool = False,
) -> subprocess.CompletedProcess:
    """Run the real `emu` command as a user would, through its click entry point: in a child
    process where the test needs one (``env``, read by libraries at import, or ``process``:
    start-up, signals), otherwise in this process, which spares each call the 5 s of CPU that
    importing torch, timm and diffusers costs a new process (about 10 minutes of a suite).
    Either way: the exit code, standard output and standard error apart."""
    if env is None and not process:
        return _in_process(args, check)
    result = subprocess.run(
        [*EMU, *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )
    if check and result.returncode != 0:
        raise AssertionError(f"emu {' '.join(map(str, args))} failed:\n{result.stderr[-3000:]}")
    return result


_COMMANDS_REGISTERED = False


def _in_process(args: tuple, check: bool) -> subprocess.CompletedProcess:
    import traceback

    from emu_cli.cli import cli
    from emu_cli.plugin import registry

    global _COMMANDS_REGISTERED
    if not _COMMANDS_REGISTERED:  # what `main()` does before it runs the group
        registry.register_commands(cli)
        _COMMANDS_REGISTERED = True
    words = [str(a) for a in args]
    result = CliRunner().invoke(cli, words, prog_name="emu", catch_exceptions=True)
    stderr = result.stderr
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        # what Python prints for an uncaught exception, as a child process would
        stderr += "".join(traceback.format_exception(result.exception))
    if check and result.exit_code != 0:
        raise AssertionError(f"emu {' '.join(words)} failed:\n{stderr[-3000:]}")
    return subprocess.CompletedProcess(words, result.exit_code, result.stdout, stderr)


def kill_after(args: list, marker: Path, timeout: float = 300) -> None:
    """Start `emu ARGS`, wait until ``marker`` exists (e.g. a checkpoint), then SIGKILL it:
    a crash mid-run, to test resuming."""
    import signal
    import time

    process = subprocess.Popen([*EMU, *map(str, args)], stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)  # fmt: skip
    deadline = time.time() + timeout
    while not marker.exists() and process.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    assert process.returncode == -signal.SIGKILL, "the run must be killed before it ends"


def evaluate_push_and_load(tuned: Path, parent: Path, repo: str, folder: Path) -> str:
    """The end of the recipe for a tuned model: evaluated against its parent (both generate),
    drawn from at 32 px, pushed to a Hub on 127.0.0.1 and drawn from by ``repo`` with the same
    image. Returns the card the push wrote."""
    from hub_server import WRITE_TOKEN, FakeHub
    from PIL import Image

    prompts = folder / "prompts.txt"
    prompts.write_text("a red star on a sunset background\n")
    emu("evaluate", "--a", tuned, "--b", parent, "--prompts", prompts, "--out", folder / "eval",
        "--sampling-steps", 2, "--device", "cpu", "--resamples", 10, "--judge", "none")  # fmt: skip
    assert json.loads((folder / "eval" / "results.json").read_text())["pairs"] == 1
    draw = ("a red star on a sunset background", "-n", 1, "--sampling-steps", 2, "--device",
            "cpu")  # fmt: skip
    emu("generate", "--model", tuned, *draw, "--out", folder / "local")
    assert Image.open(folder / "local" / "000-00.png").size == (32, 32), "at its own size"
    with FakeHub() as hub:
        env = {"HF_ENDPOINT": hub.endpoint, "HF_HUB_OFFLINE": "0", "HF_TOKEN": WRITE_TOKEN,
               "HF_HUB_DISABLE_TELEMETRY": "1", "HF_HOME": str(folder / "hf-home")}  # fmt: skip
        emu("push", tuned, "--repo", repo, env=env)
        card = hub.files(repo)["README.md"].decode()
        emu("generate", "--model", repo, *draw, "--out", folder / "hub", env=env)
    local, hub_drawn = (folder / side / "000-00.png" for side in ("local", "hub"))
    assert hub_drawn.read_bytes() == local.read_bytes()
    return card


def invoke(*args: str):
    """Run the CLI in-process (fast); returns click's Result."""
    from emu_cli.cli import cli

    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)


def train_stage(backend, model, stage: str, data: Path, folder: Path, **recipe_fields):
    """Train one stage in-process with the shared trainer (no CLI), on CPU."""
    from emu_cli.data import index_dataset
    from emu_cli.training.recipe import Recipe
    from emu_cli.training.session import make_accelerator
    from emu_cli.training.trainer import Trainer

    recipe = Recipe(**recipe_fields)
    accelerator = make_accelerator("cpu", recipe, folder)
    return Trainer(backend, model, stage, recipe, index_dataset(data), folder, accelerator).run(
        None
    )


@pytest.fixture(scope="session")
def world(tmp_path_factory) -> Path:
    from emu_cli.world.synth import synthesize

    return synthesize(160, tmp_path_factory.mktemp("world"), seed=1, size=32, workers=1)


def pretrain_tiny(data: Path, out: Path, *extra: object, **kwargs):
    """`emu pretrain` of the tiny latent model on CPU; ``extra`` adds or overrides options."""
    return emu(
        "pretrain",
        "--backend",
        "latent",
        "--preset",
        "tiny",
        "--data",
        data,
        "--out",
        out,
        "--device",
        "cpu",
        *extra,
        **kwargs,
    )


@pytest.fixture(scope="session")
def tiny_latent(tmp_path_factory, world) -> Path:
    """A tiny latent model pre-trained through the real CLI (both stages)."""
    out = tmp_path_factory.mktemp("runs") / "latent"
    pretrain_tiny(
        world, out, "--steps", 12, "--batch-size", 8, "--checkpoint-every", 6, "--preview-every", 6
    )
    return out


@dataclass
class JudgeWeights:
    """Small judges' weights, built from config and saved as their publishers lay them out."""

    clip: Path  # an open_clip folder with emu's aesthetic head beside it
    laion: Path  # the same CLIP with a LAION-layout head (.pth) instead
    hps: Path  # open_clip config + an HPS checkpoint ({"state_dict": ...}, a .pt)
    pickscore: Path  # a transformers CLIPModel + processor folder
    imagereward: Path  # ImageReward.pt (a pickled state dict) + med_config.json + tokenizer
    vqascore: Path  # CLIP-FlanT5: T5 config with mm_* keys, pickled shards, tokenizer


# The words the small judges' tokenizers know: their templates' and the world's captions'.
TEMPLATE_WORDS = ("A chat between a curious user and an artificial intelligence assistant . The "
                  "gives helpful , detailed polite answers to the user's questions USER : "
                  "ASSISTANT Does this figure show \" ? Please answer yes or no Yes")  # fmt: skip


@pytest.fixture(scope="session")
def judge_weights(tmp_path_factory) -> JudgeWeights:
    import json
    import shutil

    import open_clip
    import torch
    from safetensors.torch import save_file
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor

    from emu_cli.curate.aesthetic import build_head, record_path
    from emu_cli.curate.clip import SMALL_CLIP, ClipEncoder, save_open_clip
    from emu_cli.judges.clip import laion_head
    from emu_cli.kit.text import offline_clip_tokenizer

    root = tmp_path_factory.mktemp("judges")
    torch.manual_seed(0)
    clip = root / "clip"
    save_open_clip(open_clip.CLIP(**SMALL_CLIP), SMALL_CLIP, clip)
    head = build_head(SMALL_CLIP["embed_dim"])
    save_file(
        {k: v.contiguous() for k, v in head.state_dict().items()}, clip / "aesthetic.safetensors"
    )
    fingerprint = ClipEncoder.load(str(clip)).fingerprint()  # the head reads this CLIP only
    record = {"embed_dim": SMALL_CLIP["embed_dim"], "clip_model": str(clip),
              "clip_fingerprint": fingerprint}  # fmt: skip
    record_path(clip / "aesthetic.safetensors").write_text(json.dumps(record))

    laion = root / "laion"
    save_open_clip(open_clip.CLIP(**SMALL_CLIP), SMALL_CLIP, laion)
    width = SMALL_CLIP["embed_dim"]
    torch.save(_laion_state(width), laion / "sac+logos+ava1-l14-linearMSE.pth")
    laion_head(laion / "sac+logos+ava1-l14-linearMSE.pth")  # the layout reads back

    hps = root / "hps"
    shutil.copytree(clip, hps, ignore=shutil.ignore_patterns("aesthetic*", "*.safetensors"))
    tuned = open_clip.CLIP(**SMALL_CLIP)
    torch.save({"epoch": 1, "state_dict": tuned.state_dict()}, hps / "HPS_v2.1_compressed.pt")

    pickscore = root / "pickscore"
    config = CLIPConfig(
        text_config={"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
                     "num_attention_heads": 2, "max_position_embeddings": 77},
        vision_config={"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
                       "num_attention_heads": 2, "image_size": 32, "patch_size": 8},
        projection_dim=16,
    )  # fmt: skip
    CLIPModel(config).save_pretrained(pickscore, safe_serialization=True)
    images = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    CLIPProcessor(image_processor=images, tokenizer=offline_clip_tokenizer()).save_pretrained(
        pickscore
    )
    words = sorted({w.lower() for w in TEMPLATE_WORDS.split()} | _world_words())
    imagereward = _imagereward_folder(root / "imagereward", words)
    vqascore = _clip_flant5_folder(root / "vqascore", words)
    return JudgeWeights(clip, laion, hps, pickscore, imagereward, vqascore)


def _world_words() -> set[str]:
    import re

    from emu_cli.world.concepts import BACKGROUNDS, CAPTION_TEMPLATES, COLORS, SUBJECTS

    text = " ".join([*SUBJECTS, *COLORS, *BACKGROUNDS, *CAPTION_TEMPLATES]).lower()
    return set(re.findall(r"[a-z]+|[^a-z\s{}]", text))


def blip_vit():
    """BLIP's ViT at the small judge's size, as timm builds it (BLIP's code is timm's)."""
    from functools import partial

    import torch.nn as nn
    from timm.models.vision_transformer import VisionTransformer

    return VisionTransformer(img_size=32, patch_size=16, embed_dim=128, depth=2, num_heads=2,
                             qkv_bias=True, num_classes=0, global_pool="",
                             norm_layer=partial(nn.LayerNorm, eps=1e-6))  # fmt: skip


def blip_text(med: dict):
    """BLIP's text encoder as ``med_config.json`` describes it, attending to the ViT above."""
    from transformers import BlipTextConfig, BlipTextModel

    keys = ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
            "vocab_size", "max_position_embeddings")  # fmt: skip
    config = BlipTextConfig(**{k: med[k] for k in keys}, encoder_hidden_size=128, is_decoder=True)
    return BlipTextModel(config, add_pooling_layer=False)


def _imagereward_folder(folder: Path, words: list[str]) -> Path:
    """ImageReward's published layout: BLIP's ViT under timm's names (built here with timm),
    BLIP's text encoder, the MLP, and keys its loader ignores."""
    import json
    from collections import OrderedDict

    import torch
    from transformers import BertTokenizer

    folder.mkdir()
    vocabulary = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *words]
    (folder / "vocab.txt").write_text("\n".join(vocabulary) + "\n")
    BertTokenizer(str(folder / "vocab.txt")).save_pretrained(folder)
    med = {
        "hidden_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "intermediate_size": 128,
        "vocab_size": 30524,  # bert-base-uncased and BLIP's two
        "max_position_embeddings": 40,
        "layer_norm_eps": 1e-12,
        "hidden_act": "gelu",
        "pad_token_id": 0,
        "encoder_width": 128,
        "add_cross_attention": True,
        "model_type": "bert",
        "type_vocab_size": 2,
    }
    (folder / "med_config.json").write_text(json.dumps(med))
    vit = blip_vit()
    text = blip_text(med)
    state = OrderedDict()
    for prefix, module in (
        ("blip.visual_encoder.", vit),
        ("blip.text_encoder.", text),
    ):
        state.update({prefix + k: v for k, v in module.state_dict().items()})
    state.update({f"mlp.{k}": v for k, v in _laion_state(64).items()})  # the same MLP
    state["blip.text_encoder.embeddings.position_ids"] = torch.arange(40)[None]
    state["blip.vision_proj.weight"] = torch.randn(16, 128)  # BLIP's contrastive heads
    torch.save(state, folder / "ImageReward.pt")
    return folder


def _clip_flant5_folder(folder: Path, words: list[str]) -> Path:
    """CLIP-FlanT5's published layout: a T5 config naming its vision tower and projector,
    weights in pickled shards with an index, a T5 tokenizer; the tower in a folder of its own."""
    import json

    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import (
        CLIPImageProcessor,
        CLIPVisionConfig,
        CLIPVisionModel,
        PreTrainedTokenizerFast,
        T5Config,
        T5ForConditionalGeneration,
    )

    tower = folder.parent / "clip-vision-336"
    CLIPVisionModel(
        CLIPVisionConfig(
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=3,
            num_attention_heads=2,
            image_size=28,
            patch_size=14,
        )
    ).save_pretrained(tower, safe_serialization=True)
    CLIPImageProcessor(
        size={"shortest_edge": 28}, crop_size={"height": 28, "width": 28}
    ).save_pretrained(tower)
    pieces = sorted({"\u2581" + w for w in words} | {"\u2581" + w.capitalize() for w in words})
    characters = sorted(set("".join(words + [w.upper() for w in words]) + "\n\u2581"))
    vocabulary = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0)]
    vocabulary += [(p, -1.0) for p in pieces] + [(c, -8.0) for c in characters]
    model = Tokenizer(models.Unigram(vocabulary, unk_id=2))
    model.pre_tokenizer, model.decoder = pre_tokenizers.Metaspace(), decoders.Metaspace()
    model.post_processor = processors.TemplateProcessing(
        single="$A </s>", special_tokens=[("</s>", 1)]
    )
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=model, eos_token="</s>", pad_token="<pad>", unk_token="<unk>"
    )
    tokenizer.save_pretrained(folder)
    config = T5Config(
        vocab_size=len(vocabulary) + 28,  # FlanT5's rows beyond its tokenizer
        d_model=32,
        d_kv=16,
        d_ff=64,
        num_layers=2,
        num_heads=2,
        feed_forward_proj="gated-gelu",
        decoder_start_token_id=0,
    )
    t5 = T5ForConditionalGeneration(config)
    projector = torch.nn.Sequential(
        torch.nn.Linear(32, 32), torch.nn.GELU(), torch.nn.Linear(32, 32)
    )
    state = {
        **t5.state_dict(),
        **{f"mm_projector.{k}": v for k, v in projector.state_dict().items()},
    }
    state["lm_head.weight"] = torch.randn_like(state["shared.weight"])  # FlanT5 keeps its own
    names = sorted(state)
    shards = {
        "pytorch_model-00001-of-00002.bin": names[: len(names) // 2],
        "pytorch_model-00002-of-00002.bin": names[len(names) // 2 :],
    }
    for shard, keys in shards.items():
        torch.save({k: state[k].clone() for k in keys}, folder / shard)
    index = {
        "metadata": {"total_size": sum(v.numel() * v.element_size() for v in state.values())},
        "weight_map": {k: shard for shard, keys in shards.items() for k in keys},
    }
    (folder / "pytorch_model.bin.index.json").write_text(json.dumps(index))
    # as FlanT5's config says it (transformers 5 writes its own reading of it instead)
    written = {k: v for k, v in config.to_dict().items() if k != "scale_decoder_outputs"}
    published = {
        **written,
        "tie_word_embeddings": False,
        "model_type": "clip_t5",
        "mm_vision_tower": str(tower),
        "mm_projector_type": "mlp2x_gelu",
        "mm_hidden_size": 32,
        "mm_vision_select_layer": -2,
        "mm_vision_select_feature": "patch",
    }
    (folder / "config.json").write_text(json.dumps(published))
    return folder


def _laion_state(width: int) -> dict:
    """A state dict in the layout of LAION's improved aesthetic predictor."""
    import torch.nn as nn

    layers = nn.Sequential(
        nn.Linear(width, 1024),
        nn.Dropout(0.2),
        nn.Linear(1024, 128),
        nn.Dropout(0.2),
        nn.Linear(128, 64),
        nn.Dropout(0.1),
        nn.Linear(64, 16),
        nn.Linear(16, 1),
    )
    return {f"layers.{k}": v for k, v in layers.state_dict().items()}


CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
# No sandbox as root; no background traffic, which this machine's closed network would refuse.
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                  "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync"]  # fmt: skip


@pytest.fixture(scope="module")
def browser():
    """Debian's chromium, headless, driven by Playwright (which cannot download one here)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        yield launched
        launched.close()
