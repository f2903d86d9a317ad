"""Judges trained on people's preferences between generated images: PickScore (a CLIP-H
fine-tuned on Pick-a-Pic, through transformers) and HPSv2.1 (an open_clip ViT-H-14
fine-tuned on HPD v2). Each scores an image for its prompt; that score is their appeal. They
give no separate faithfulness: compose them with one that does
(``--judge appeal=hpsv2,faithfulness=clipscore``)."""

from __future__ import annotations

from typing import Any

import numpy as np

from emu_cli.errors import EmuError
from emu_cli.judges.single import SingleMeasureJudge
from emu_cli.judges.weights import judge_folder, no_pickles_beside, state_dict
from emu_cli.kit.scoring import Scale

# PickScore is CLIP's logit (100 x cosine): about 18-23 on generated images, 21 typical.
PICKSCORE = Scale(center=21.0, spread=1.0)
# HPSv2.1 is the cosine itself: about 0.24-0.32 on generated images, 0.27 typical.
HPS = Scale(center=0.27, spread=0.015)


class PickScoreJudge(SingleMeasureJudge):
    name = "pickscore"
    description = "appeal: PickScore v1, CLIP-H trained on Pick-a-Pic preferences (transformers)"
    default_source = "yuvalkirstain/PickScore_v1"
    # PickScore_v1 holds the model only; its processor is the CLIP-H one it was tuned from
    processor_source = "laion/CLIP-ViT-H-14-laion2B-s32B-b79K"
    scale = PICKSCORE

    def load(self, source: str) -> Any:
        from transformers import AutoProcessor, CLIPModel

        files = ["*.json", "*.txt", "*.safetensors"]
        folder = judge_folder(source, files, self.name)
        no_pickles_beside(folder, set())
        # transformers writes preprocessor_config.json, or processor_config.json since v5
        has_processor = any(
            (folder / name).is_file()
            for name in ("preprocessor_config.json", "processor_config.json")
        )
        processor_folder = (
            folder if has_processor else judge_folder(self.processor_source, files, self.name)
        )
        model = CLIPModel.from_pretrained(folder, use_safetensors=True).eval()
        return model, AutoProcessor.from_pretrained(processor_folder)

    def raw(self, images: list, prompts: list[str]) -> np.ndarray:
        import torch

        model, processor = self._loaded
        inputs = processor(
            text=prompts,
            images=[image.convert("RGB") for image in images],
            padding=True,
            truncation=True,
            return_tensors="pt",
        )
        with torch.inference_mode():
            out = model(**inputs)  # its embeddings come normalised
            cosines = (out.image_embeds * out.text_embeds).sum(-1)
            return (model.logit_scale.exp() * cosines).numpy()


class HpsV2Judge(SingleMeasureJudge):
    name = "hpsv2"
    description = "appeal: Human Preference Score v2.1, open_clip ViT-H-14 trained on HPD v2"
    default_source = "xswu/HPSv2"
    checkpoints = ("HPS_v2.1_compressed.pt", "HPS_v2_compressed.pt")
    architecture = "ViT-H-14"  # unless the folder's open_clip_config.json says otherwise
    scale = HPS

    def load(self, source: str) -> Any:
        import open_clip

        from emu_cli.curate.clip import CONFIG_FILE

        folder = judge_folder(source, [*self.checkpoints, "*.safetensors", "*.json"], self.name)
        found = [folder / n for n in self.checkpoints if (folder / n).is_file()] or sorted(
            folder.glob("*.safetensors")
        )
        if not found:
            raise EmuError(
                f"'{source}' holds no HPS checkpoint ({' or '.join(self.checkpoints)}, or a "
                ".safetensors state dict)"
            )
        no_pickles_beside(folder, {found[0].name})
        local = (folder / CONFIG_FILE).is_file()
        name = f"local-dir:{folder.resolve()}" if local else self.architecture
        model, _, preprocess = open_clip.create_model_and_transforms(name, load_weights=False)
        try:
            model.load_state_dict(state_dict(found[0]))
        except RuntimeError as error:
            raise EmuError(f"'{found[0]}' does not fit open_clip {name}: {error}") from error
        return model.eval(), preprocess, open_clip.get_tokenizer(name)

    def raw(self, images: list, prompts: list[str]) -> np.ndarray:
        import torch

        model, preprocess, tokenizer = self._loaded
        pixels = torch.stack([preprocess(image.convert("RGB")) for image in images])
        with torch.inference_mode():
            pictures = model.encode_image(pixels, normalize=True)
            words = model.encode_text(tokenizer(prompts), normalize=True)
            return (pictures * words).sum(-1).numpy()
