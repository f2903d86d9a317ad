"""The text side, offline: a CLIP tokenizer written from the BPE merges open_clip ships, and
CLIP text encoders built from a config or loaded by hub name or local path."""

from __future__ import annotations

import gzip
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

from emu_cli.errors import EmuError
from emu_cli.files import refuse_pickles

if TYPE_CHECKING:
    from emu_cli.plugin.backend import Model

# open_clip's vocabulary: 256 byte symbols, the same with an end-of-word mark, the merges, and
# two special tokens. Its ids are CLIP's ids, so the tokenizer written here matches open_clip's.
_MERGE_COUNT = 49152 - 256 - 2


def _bytes_to_unicode() -> dict[int, str]:
    # GPT-2/CLIP's reversible map from bytes to printable characters.
    printable = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    characters = printable[:]
    extra = 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            characters.append(256 + extra)
            extra += 1
    return dict(zip(printable, map(chr, characters), strict=True))


def open_clip_bpe_path() -> Path:
    import open_clip

    return Path(open_clip.__file__).parent / "bpe_simple_vocab_16e6.txt.gz"


def clip_vocabulary() -> tuple[dict[str, int], list[tuple[str, str]]]:
    """CLIP's BPE vocabulary and merges, read from the file open_clip ships."""
    with gzip.open(open_clip_bpe_path()) as handle:
        lines = handle.read().decode("utf-8").split("\n")
    merges = [tuple(line.split()) for line in lines[1 : _MERGE_COUNT + 1]]
    symbols = list(_bytes_to_unicode().values())
    tokens = symbols + [s + "</w>" for s in symbols] + ["".join(m) for m in merges]
    tokens += ["<|startoftext|>", "<|endoftext|>"]
    return {token: i for i, token in enumerate(tokens)}, merges


def offline_clip_tokenizer(max_length: int = 77) -> Any:
    """A ``transformers.CLIPTokenizer`` built without network, identical to open_clip's."""
    from transformers import CLIPTokenizer

    vocabulary, merges = clip_vocabulary()
    return CLIPTokenizer(vocab=vocabulary, merges=merges, model_max_length=max_length)


def offline_t5_tokenizer() -> Any:
    """A ``transformers`` T5 tokenizer (a sentencepiece unigram model, as T5's) over single
    letters, built without network: every caption tokenises. For small T5 encoders built
    from a config (the tests' SD3, Flux and DeepFloyd IF folders)."""
    import string

    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import T5TokenizerFast

    letters = string.ascii_lowercase
    vocabulary = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0)]
    vocabulary += [("\u2581" + c, -2.0) for c in letters] + [(c, -3.0) for c in letters]
    model = Tokenizer(models.Unigram(vocabulary, unk_id=2))
    model.pre_tokenizer, model.decoder = pre_tokenizers.Metaspace(), decoders.Metaspace()
    model.post_processor = processors.TemplateProcessing(
        single="$A </s>", special_tokens=[("</s>", 1)]
    )
    return T5TokenizerFast(tokenizer_object=model, eos_token="</s>", pad_token="<pad>",
                           unk_token="<unk>", extra_ids=0)  # fmt: skip


TEXT_ENCODER_KINDS = ("clip", "clip-projection", "t5")


def build_text_encoder(config: dict[str, Any], kind: str = "clip") -> Any:
    """A randomly initialised text encoder from a config dict: ``CLIPTextModel`` (hidden size,
    layers, ...); ``CLIPTextModelWithProjection`` for ``kind="clip-projection"`` (it adds the
    pooled, projected embedding Muse-like models condition on); or, for ``kind="t5"``, a
    ``T5EncoderModel`` (d_model, num_layers, ...) as Imagen uses. All read the offline CLIP
    tokenizer's ids, so none needs a download."""
    if kind in ("clip", "clip-projection"):
        from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

        defaults = {
            "vocab_size": 49408,
            "max_position_embeddings": 77,
            "bos_token_id": 49406,
            "eos_token_id": 49407,
            "pad_token_id": 49407,
        }
        model_class = CLIPTextModelWithProjection if kind == "clip-projection" else CLIPTextModel
        return model_class(CLIPTextConfig(**{**defaults, **config}))
    if kind == "t5":
        from transformers import T5Config, T5EncoderModel

        defaults = {"vocab_size": 49408, "pad_token_id": 49407, "eos_token_id": 49407}
        return T5EncoderModel(T5Config(**{**defaults, **config}))
    raise EmuError(f"text encoder kind must be one of {', '.join(TEXT_ENCODER_KINDS)}: {kind!r}")


def load_text_encoder(name_or_path: str, projection: bool = False) -> tuple[Any, Any]:
    """(tokenizer, text encoder) from a hub name or a local folder: a CLIP text model or a T5
    encoder (``google/t5-v1_1-xl``, ``openai/clip-vit-large-patch14``), as its config says.

    A model folder holds both at its root; a diffusers pipeline folder holds them in
    ``tokenizer/`` and ``text_encoder/``. Both layouts work. ``projection`` loads a CLIP model
    with its text projection (``CLIPTextModelWithProjection``).
    """
    from transformers import (
        AutoConfig,
        AutoTokenizer,
        CLIPTextModel,
        CLIPTextModelWithProjection,
        CLIPTokenizer,
        T5EncoderModel,
    )

    local = Path(name_or_path)
    if local.is_dir():
        refuse_pickles(local)
    subfolders = ("tokenizer", "text_encoder") if (local / "text_encoder").is_dir() else ("", "")
    try:
        config = AutoConfig.from_pretrained(name_or_path, subfolder=subfolders[1])
        t5 = config.model_type in ("t5", "umt5")
        tokenizer_class = AutoTokenizer if t5 else CLIPTokenizer
        tokenizer = tokenizer_class.from_pretrained(name_or_path, subfolder=subfolders[0])
        clip_class = CLIPTextModelWithProjection if projection else CLIPTextModel
        encoder_class = T5EncoderModel if t5 else clip_class
        # safetensors only, from the Hub too: pickled weights can run code when loaded
        encoder = encoder_class.from_pretrained(
            name_or_path, subfolder=subfolders[1], use_safetensors=True
        )
    except (OSError, ValueError) as error:
        raise EmuError(
            f"text encoder '{name_or_path}' could not be loaded: {error}. Give a local folder "
            "or a hub name that is in your cache (HF_HUB_OFFLINE is honoured)."
        ) from error
    return tokenizer, encoder


def token_ids(tokenizer: Any, captions: list[str], device: Any) -> Any:
    """Captions to padded, truncated token ids on ``device``: what every text encoder reads."""
    return tokenizer(
        captions,
        padding="max_length",
        max_length=tokenizer.model_max_length,
        truncation=True,
        return_tensors="pt",
    ).input_ids.to(device)


def text_encoder_training(model: Model) -> tuple[bool, float]:
    """Whether a stage trains ``model``'s text encoder (option ``train_text_encoder``), and at
    what fraction of the stage's learning rate (option ``text_encoder_lr_scale``); sets its
    ``requires_grad`` to match."""
    train = bool(model.options.get("train_text_encoder", False))
    scale = model.options.get("text_encoder_lr_scale", 1.0)
    if (
        isinstance(scale, bool)
        or not isinstance(scale, int | float)
        or not (math.isfinite(scale) and scale > 0)
    ):
        raise EmuError(f"option text_encoder_lr_scale must be a number > 0, got {scale!r}")
    model["text_encoder"].requires_grad_(train)
    return train, float(scale)


TEXT_ENCODERS = ("text_encoder", "text_encoder_2", "text_encoder_3")  # diffusers' names


def frozen_text_encoders(model: Model) -> tuple[str, ...]:
    """``model``'s text encoders when they are frozen (option ``train_text_encoder`` false):
    only ``encode`` runs them (:func:`text_inputs`), so quality-tuning's cache holds their
    outputs and they can leave memory during its steps."""
    if model.options.get("train_text_encoder", False):
        return ()
    return tuple(name for name in TEXT_ENCODERS if name in model.components)


def text_inputs(model: Model, captions: list[str], device: Any) -> dict[str, Any]:
    """What a denoiser reads of ``captions``: token ids where its text encoder trains with it;
    where the encoder is frozen, its last states (``states``), computed here, so that the
    training step never runs it and quality-tuning's cache keeps them."""
    ids = token_ids(model["tokenizer"], captions, device)
    if not frozen_text_encoders(model):
        return {"input_ids": ids}
    return {"states": model["text_encoder"](ids)[0]}
