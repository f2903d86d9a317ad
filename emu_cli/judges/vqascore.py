"""VQAScore (Lin et al. 2024) with CLIP-FlanT5: the probability that a vision-language model
answers "Yes" to 'Does this figure show "PROMPT"? Please answer yes or no.' It measures
faithfulness, and on compositional prompts agrees with people better than CLIPScore does.

CLIP-FlanT5 is a LLaVA-style model: CLIP ViT-L/14-336's patch features from its second-last
layer, projected by a small MLP, stand in for an ``<image>`` token in FlanT5's encoder input.
Its publisher's code (t2v_metrics) registers a custom model class; emu builds the same model
from transformers' ``T5ForConditionalGeneration`` and ``CLIPVisionModel`` and reads the
published weights into them (pickled shards weights-only), so that package is not needed.
The 11B ``clip-flant5-xxl`` needs a GPU (bf16 there); ``clip-flant5-xl`` is the smaller one."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import numpy as np

from emu_cli.errors import EmuError
from emu_cli.judges.single import SingleMeasureJudge
from emu_cli.judges.weights import (
    fill,
    judge_folder,
    no_pickles_beside,
    state_dict,
    with_prefix,
)
from emu_cli.kit.scoring import Scale

QUESTION = 'Does this figure show "{}"? Please answer yes or no.'
ANSWER = "Yes"
# CLIP-FlanT5's chat template (LLaVA's system message); the image goes where <image> stands
SYSTEM = (
    "A chat between a curious user and an artificial intelligence assistant. The assistant "
    "gives helpful, detailed, and polite answers to the user's questions."
)
TEMPLATE = SYSTEM + " USER: <image>\n{} ASSISTANT: "
TOKENIZER = "google/flan-t5-xxl"  # every FlanT5 size shares this vocabulary
VISION_TOWER = "openai/clip-vit-large-patch14-336"
# VQAScore is a probability: 0.5 (the model cannot tell) maps to 0.5
PROBABILITY = Scale(center=0.5, spread=0.1)


class VqaScoreJudge(SingleMeasureJudge):
    name = "vqascore"
    description = "faithfulness: VQAScore, P(yes) from CLIP-FlanT5 (transformers)"
    measures = ("faithfulness",)
    default_source = "zhiqiulin/clip-flant5-xxl"
    scale = PROBABILITY

    def load(self, source: str) -> Any:
        files = ["*.json", "*.safetensors", "*.bin", "*.model", "*.txt"]
        return ClipFlanT5.load(judge_folder(source, files, self.name), self.name)

    def raw(self, images: list, prompts: list[str]) -> np.ndarray:
        return self._loaded.yes_probability(images, prompts)


class ClipFlanT5:
    """CLIP-FlanT5 on transformers' classes: vision tower, projector, FlanT5, tokenizer."""

    def __init__(
        self,
        t5: Any,
        projector: Any,
        vision: Any,
        processor: Any,
        tokenizer: Any,
        select_layer: int,
    ) -> None:
        import torch

        self.device = t5.device
        self.t5, self.projector, self.vision = t5, projector, vision
        self.processor, self.tokenizer, self.select_layer = processor, tokenizer, select_layer
        self.background = tuple(int(255 * m) for m in processor.image_mean)
        self.answer = torch.tensor(tokenizer(ANSWER).input_ids)  # "Yes" and the end mark
        # the template before <image> is the same for every prompt: tokenised once
        before, self.after = TEMPLATE.split("<image>")
        self.before = torch.tensor(tokenizer(before).input_ids, device=self.device)

    @classmethod
    def load(cls, folder: Path, judge: str) -> ClipFlanT5:
        import torch
        from transformers import (
            AutoTokenizer,
            CLIPImageProcessor,
            CLIPVisionModel,
            T5Config,
            T5ForConditionalGeneration,
        )

        if not (folder / "config.json").is_file():
            raise EmuError(f"'{folder}' is not a CLIP-FlanT5 folder: no config.json")
        config = json.loads((folder / "config.json").read_text())
        shards = sorted(folder.glob("*.safetensors")) or sorted(folder.glob("*.bin"))
        if not shards:
            raise EmuError(f"'{folder}' holds no weights (.safetensors or .bin shards)")
        no_pickles_beside(folder, {p.name for p in shards})
        tensors: dict[str, Any] = {}
        for shard in shards:
            tensors.update(state_dict(shard))
        cuda = torch.cuda.is_available()
        dtype = torch.bfloat16 if cuda else torch.float32
        t5_config = T5Config.from_dict({k: v for k, v in config.items() if k != "model_type"})
        # Built without memory and filled from the file's tensors: xxl has 11B parameters.
        with torch.device("meta"):
            t5 = T5ForConditionalGeneration(t5_config)
            # transformers 5 ties the output layer to the embedding; FlanT5 keeps its own
            t5.lm_head = torch.nn.Linear(t5_config.d_model, t5_config.vocab_size, bias=False)
        vision_source = config.get("mm_vision_tower", VISION_TOWER)
        vision_folder = judge_folder(vision_source, ["*.json", "*.safetensors"], judge)
        vision = CLIPVisionModel.from_pretrained(vision_folder, use_safetensors=True)
        projector = _projector(config, vision.config.hidden_size, t5_config.d_model)
        what = f"the weights in '{folder}' (CLIP-FlanT5)"
        towers = with_prefix(tensors, "vision_tower.vision_tower.")
        if towers:  # a checkpoint may keep the frozen tower; else its own repo gives it
            fill(vision, towers, what, assign=True)
        fill(projector, with_prefix(tensors, "mm_projector."), what, assign=True)
        words = {
            k: v for k, v in tensors.items() if not k.startswith(("vision_tower.", "mm_projector."))
        }
        for tied in (
            "encoder.embed_tokens.weight",
            "decoder.embed_tokens.weight",
            "lm_head.weight",
        ):
            if "shared.weight" in words:  # a file may keep tied weights once, as shared
                words.setdefault(tied, words["shared.weight"])
        fill(t5, words, what, assign=True)
        has_tokenizer = any((folder / n).is_file() for n in ("tokenizer.json", "spiece.model"))
        # given the config, since transformers knows no model type clip_t5
        tokenizer = AutoTokenizer.from_pretrained(
            folder if has_tokenizer else judge_folder(TOKENIZER, ["*.json", "*.model"], judge),
            config=t5_config,
        )
        parts = [
            m.to(device="cuda" if cuda else "cpu", dtype=dtype).eval()
            for m in (t5, projector, vision)
        ]
        return cls(
            *parts,
            CLIPImageProcessor.from_pretrained(vision_folder),
            tokenizer,
            config.get("mm_vision_select_layer", -2),
        )

    def yes_probability(self, images: list, prompts: list[str]) -> np.ndarray:
        """Per image, exp of the mean log-probability of the answer's tokens (t2v_metrics)."""
        import torch

        squares = [_padded_square(image.convert("RGB"), self.background) for image in images]
        pixels = self.processor(images=squares, return_tensors="pt").pixel_values
        with torch.inference_mode():
            hidden = self.vision(
                pixel_values=pixels.to(self.device, self.t5.dtype), output_hidden_states=True
            ).hidden_states[self.select_layer][:, 1:]  # patches, not the class token
            pictures = self.projector(hidden)
            embeds, mask = self._inputs(pictures, prompts)
            labels = self.answer.to(self.device).repeat(len(images), 1)
            logits = self.t5(inputs_embeds=embeds, attention_mask=mask, labels=labels).logits
            # t2v_metrics resizes the vocabulary to the tokenizer's: the softmax spans that
            log_probs = logits[..., : len(self.tokenizer)].float().log_softmax(-1)
            picked = log_probs.gather(-1, labels.unsqueeze(-1)).squeeze(-1)
            return picked.mean(1).exp().cpu().numpy()

    def _inputs(self, pictures: Any, prompts: list[str]) -> tuple[Any, Any]:
        """The encoder's input embeddings: the template's text with the image's features
        where ``<image>`` stands, each part tokenised on its own as t2v_metrics does; padded
        on the right, with the mask that hides the padding."""
        import torch

        embed = self.t5.get_input_embeddings()
        opening = embed(self.before)
        rows = []
        for features, prompt in zip(pictures, prompts, strict=True):
            text = self.after.format(QUESTION.format(prompt))
            ids = torch.tensor(self.tokenizer(text).input_ids, device=self.device)
            rows.append(torch.cat([opening, features, embed(ids)]))
        length = max(len(row) for row in rows)
        mask = torch.zeros(len(rows), length, dtype=torch.long, device=self.device)
        padded = torch.zeros(
            len(rows), length, rows[0].shape[1], dtype=rows[0].dtype, device=self.device
        )
        for i, row in enumerate(rows):
            padded[i, : len(row)], mask[i, : len(row)] = row, 1
        return padded, mask


def _padded_square(image: Any, background: tuple[int, ...]) -> Any:
    """The image centred on a square of the processor's mean colour (LLaVA's 'pad')."""
    from PIL import Image

    width, height = image.size
    side = max(width, height)
    square = Image.new("RGB", (side, side), background)
    square.paste(image, ((side - width) // 2, (side - height) // 2))
    return square


def _projector(config: dict, vision_width: int, width: int) -> Any:
    """LLaVA's projector: ``linear`` or ``mlpNx_gelu`` (CLIP-FlanT5 uses ``mlp2x_gelu``)."""
    import torch.nn as nn

    kind = config.get("mm_projector_type", "linear")
    mlp = re.fullmatch(r"mlp([1-9]\d*)x_gelu", kind)
    if kind != "linear" and mlp is None:
        raise EmuError(f"CLIP-FlanT5 projector '{kind}' is not one emu reads (linear, mlpNx_gelu)")
    depth = int(mlp.group(1)) if mlp else 1
    layers: list[nn.Module] = [nn.Linear(vision_width, width)]
    for _ in range(depth - 1):
        layers += [nn.GELU(), nn.Linear(width, width)]
    return nn.Sequential(*layers)
