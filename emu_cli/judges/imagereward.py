"""ImageReward (Xu et al. 2023): BLIP's ViT-L image encoder, BLIP's text encoder attending to
the image, and an MLP from the text's first token to a reward, trained on 137K expert
rankings of generated images. Its publisher ships one pickle (``ImageReward.pt``) for its own
package, which downloads at load time; emu reads that file weights-only and runs it on
transformers' BLIP classes (``BlipVisionModel``, ``BlipTextModel``), which share BLIP's
layer names, so nothing of the ImageReward package is needed.

The reward is appeal in the sense of its training data (overall preference, of which prompt
fidelity is one part); compose it with a faithfulness judge."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

import numpy as np

from emu_cli.errors import EmuError
from emu_cli.judges.clip import laion_mlp
from emu_cli.judges.single import SingleMeasureJudge
from emu_cli.judges.weights import (
    fill,
    judge_folder,
    no_pickles_beside,
    state_dict,
    with_prefix,
)
from emu_cli.kit.scoring import Scale

CHECKPOINT = "ImageReward.pt"
TEXT_CONFIG = "med_config.json"
# ImageReward tokenises with bert-base-uncased (BLIP's two added tokens are unused in scoring)
TOKENIZER = "google-bert/bert-base-uncased"
TOKENS = 35  # ImageReward pads or cuts every prompt to 35 tokens
# ImageReward.score standardises the MLP's output with its training set's mean and deviation
MEAN, STD = 0.16717362830052426, 1.0333394966054072
# ...so its raw reward is about N(0, 1) on its own data: 0 maps to 0.5
REWARD = Scale(center=0.0, spread=1.0)
HEAD_WIDTH = 64  # BLIP's ViTs (base 12 heads, large 16) use 64 channels a head


class ImageRewardJudge(SingleMeasureJudge):
    name = "imagereward"
    description = "appeal: ImageReward v1.0, BLIP trained on expert rankings (transformers)"
    default_source = "THUDM/ImageReward"
    scale = REWARD

    def load(self, source: str) -> Any:
        from transformers import AutoTokenizer

        folder = judge_folder(source, [CHECKPOINT, "*.json", "*.txt", "*.safetensors"], self.name)
        found = (
            [folder / CHECKPOINT]
            if (folder / CHECKPOINT).is_file()
            else sorted(folder.glob("*.safetensors"))
        )
        if not found or not (folder / TEXT_CONFIG).is_file():
            raise EmuError(
                f"'{source}' is not an ImageReward folder: it needs {CHECKPOINT} (or a "
                f".safetensors copy) and {TEXT_CONFIG}"
            )
        no_pickles_beside(folder, {CHECKPOINT})
        has_tokenizer = any((folder / n).is_file() for n in ("vocab.txt", "tokenizer.json"))
        tokenizer_folder = (
            folder if has_tokenizer else judge_folder(TOKENIZER, ["*.json", "vocab.txt"], self.name)
        )
        model = ImageRewardModel.from_state(
            state_dict(found[0]), json.loads((folder / TEXT_CONFIG).read_text()), found[0]
        )
        return model, AutoTokenizer.from_pretrained(tokenizer_folder)

    def raw(self, images: list, prompts: list[str]) -> np.ndarray:
        import torch

        model, tokenizer = self._loaded
        words = tokenizer(
            prompts, padding="max_length", truncation=True, max_length=TOKENS, return_tensors="pt"
        )
        pixels = torch.stack([model.preprocess(image) for image in images])
        with torch.inference_mode():
            return model(pixels, words.input_ids, words.attention_mask).numpy()


class ImageRewardModel:
    """ImageReward's three parts on transformers' BLIP classes, sized from the weights."""

    def __init__(self, vision: Any, text: Any, head: Any, image_size: int) -> None:
        import open_clip

        self.vision, self.text, self.head = vision, text, head
        # ImageReward reads images as CLIP does: bicubic resize, centre crop, CLIP's statistics
        self.preprocess = open_clip.transform.image_transform(image_size, is_train=False)

    @classmethod
    def from_state(cls, tensors: dict, text_config: dict, path: Path) -> ImageRewardModel:
        from transformers import BlipTextConfig, BlipTextModel, BlipVisionConfig, BlipVisionModel

        parts = {
            prefix: with_prefix(tensors, prefix)
            for prefix in ("blip.visual_encoder.", "blip.text_encoder.", "mlp.")
        }
        if not all(parts.values()):
            raise EmuError(f"'{path}' is not an ImageReward checkpoint (no blip.* and mlp.* keys)")
        vit = parts["blip.visual_encoder."]
        width = vit["cls_token"].shape[-1]
        patch = vit["patch_embed.proj.weight"].shape[-1]
        image_size = math.isqrt(vit["pos_embed"].shape[1] - 1) * patch
        vision = BlipVisionModel(
            BlipVisionConfig(
                hidden_size=width,
                num_attention_heads=width // HEAD_WIDTH,
                patch_size=patch,
                num_hidden_layers=1
                + max(int(k.split(".")[1]) for k in vit if k.startswith("blocks.")),
                intermediate_size=vit["blocks.0.mlp.fc1.weight"].shape[0],
                image_size=image_size,
                layer_norm_eps=1e-6,
                hidden_act="gelu",  # timm's ViT, as BLIP's
            )
        )
        keys = {"hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
                "vocab_size", "max_position_embeddings", "layer_norm_eps", "hidden_act",
                "pad_token_id"}  # fmt: skip
        text = BlipTextModel(
            BlipTextConfig(
                **{k: v for k, v in text_config.items() if k in keys},
                encoder_hidden_size=width,
                is_decoder=True,
            ),  # cross-attention on
            add_pooling_layer=False,
        )
        head = laion_mlp(text.config.hidden_size)
        what = f"'{path}' (ImageReward's layout)"
        fill(vision, {_vision_key(k): v for k, v in vit.items()}, what)
        fill(text, parts["blip.text_encoder."], what)  # BERT's position_ids are left out
        fill(head, parts["mlp."], what)
        return cls(vision.eval(), text.eval(), head.eval(), image_size)

    def __call__(self, pixels: Any, input_ids: Any, attention_mask: Any) -> Any:
        import torch

        pictures = self.vision(pixel_values=pixels).last_hidden_state
        out = self.text(
            input_ids=input_ids,
            attention_mask=attention_mask,
            encoder_hidden_states=pictures,
            encoder_attention_mask=torch.ones(pictures.shape[:-1], dtype=torch.long),
        )
        return ((self.head(out.last_hidden_state[:, 0, :]) - MEAN) / STD).squeeze(1)


# BLIP's ViT keeps timm's names; transformers' BlipVisionModel renames them.
_VISION_NAMES = [
    (r"^cls_token$", "embeddings.class_embedding"),
    (r"^pos_embed$", "embeddings.position_embedding"),
    (r"^patch_embed\.proj\.", "embeddings.patch_embedding."),
    (r"^blocks\.(\d+)\.norm1\.", r"encoder.layers.\1.layer_norm1."),
    (r"^blocks\.(\d+)\.norm2\.", r"encoder.layers.\1.layer_norm2."),
    (r"^blocks\.(\d+)\.attn\.qkv\.", r"encoder.layers.\1.self_attn.qkv."),
    (r"^blocks\.(\d+)\.attn\.proj\.", r"encoder.layers.\1.self_attn.projection."),
    (r"^blocks\.(\d+)\.mlp\.", r"encoder.layers.\1.mlp."),
    (r"^norm\.", "post_layernorm."),
]


def _vision_key(key: str) -> str:
    for pattern, name in _VISION_NAMES:
        if re.match(pattern, key):
            return re.sub(pattern, name, key)
    return key
