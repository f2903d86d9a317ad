"""The text side, offline: a CLIP tokenizer written from the BPE merges open_clip ships, and
CLIP text encoders built from a config or loaded by hub name or local path."""

from __future__ import annotations

import gzip
from pathlib import Path
from typing import Any

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


def build_text_encoder(config: dict[str, Any]) -> Any:
    """A randomly initialised ``CLIPTextModel`` from a config dict (hidden size, layers, ...)."""
    from transformers import CLIPTextConfig, CLIPTextModel

    defaults = {
        "vocab_size": 49408,
        "max_position_embeddings": 77,
        "bos_token_id": 49406,
        "eos_token_id": 49407,
        "pad_token_id": 49407,
    }
    return CLIPTextModel(CLIPTextConfig(**{**defaults, **config}))


def load_text_encoder(name_or_path: str) -> tuple[Any, Any]:
    """(tokenizer, text encoder) from a hub name or a local folder.

    A CLIP model folder (``openai/clip-vit-large-patch14``) holds both at its root; a diffusers
    pipeline folder holds them in ``tokenizer/`` and ``text_encoder/``. Both layouts work.
    """
    from transformers import CLIPTextModel, CLIPTokenizer

    local = Path(name_or_path)
    subfolders = ("tokenizer", "text_encoder") if (local / "text_encoder").is_dir() else ("", "")
    try:
        tokenizer = CLIPTokenizer.from_pretrained(name_or_path, subfolder=subfolders[0])
        encoder = CLIPTextModel.from_pretrained(name_or_path, subfolder=subfolders[1])
    except OSError as error:
        raise ValueError(
            f"text encoder '{name_or_path}' could not be loaded: {error}. Give a local folder "
            "or a hub name that is in your cache (HF_HUB_OFFLINE is honoured)."
        ) from error
    return tokenizer, encoder
