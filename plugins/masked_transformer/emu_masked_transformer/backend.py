"""A masked generative transformer as Muse: a VQ tokenizer (stage ``tokenizer``), then a
bidirectional transformer over its tokens conditioned on CLIP text (stage ``transformer``),
sampled by iterative parallel decoding. Checkpoints are ``AmusedPipeline`` folders."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from emu_cli import (
    Backend,
    Model,
    Recipe,
    Stage,
    adopted_provenance,
    checked_options,
    component_config,
)
from emu_masked_transformer.presets import PRESETS, STAGE_DEFAULTS

if TYPE_CHECKING:
    import torch
    from PIL import Image
    from torch import nn

PIPELINE_CLASS = "AmusedPipeline"
DISCRIMINATOR = "discriminator"
DEFAULT_OPTIONS: dict[str, Any] = {
    "text_encoder": None,  # a pretrained CLIP model with its text projection: hub name or folder
    "train_text_encoder": None,  # default: trained when built here, frozen when pretrained
    "text_encoder_lr_scale": 1.0,  # the trained text encoder's rate, relative to the stage's
    "adversarial_weight": None,  # default: the preset's (0 on CPU presets)
    "label_smoothing": 0.1,
}


class _AmusedDeprecationNotice(logging.Filter):
    """diffusers logs that AmusedPipeline is deprecated each time one is built (every sampling
    call); docs/backends.md says so once, and the pipeline still works in the pinned version."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "AmusedPipeline has been deprecated" not in record.getMessage()


_QUIET = _AmusedDeprecationNotice()


class MaskedTransformer(Backend):
    name = "masked"
    description = (
        "Masked generative transformer (Muse-like): VQModel tokenizer + UVit2DModel with a "
        "position table"
    )
    caption_encodings = ("input_ids",)  # token ids; the rest encodes images
    stages = (
        Stage(
            "tokenizer",
            "VQModel image tokenizer (codebook, dead-code restarts)",
            STAGE_DEFAULTS["tokenizer"],
            reads_captions=False,
        ),
        Stage(
            "transformer",
            "masked-token transformer on CLIP text states",
            STAGE_DEFAULTS["transformer"],
        ),
    )
    # A masked model adds no Gaussian noise, so the recipe's noise offset does not apply; the
    # recipe's caption dropout (classifier-free guidance), EMA, learning rate and step cap do.
    uses_noise_offset = False
    # At the diffusion backends' rate (1e-4 at small) the transformer barely moves and the
    # panel preferred the pre-trained model; at 5e-4 it preferred the tuned one
    # (docs/results.md, "How far quality-tuning can go").
    quality_tune_lr_scale = 5.0
    # Guidance 5 (the diffusion backends') hides most of what quality-tuning teaches it; 2
    # keeps some guidance and shows the gain (docs/results.md, "Where we stand").
    default_guidance = 2.0

    @staticmethod
    def _options(preset: str, options: dict[str, Any]) -> dict[str, Any]:
        if preset not in PRESETS:
            raise ValueError(f"unknown preset '{preset}' (presets: {', '.join(PRESETS)})")
        defaults = {
            **DEFAULT_OPTIONS,
            "adversarial_weight": PRESETS[preset]["adversarial_weight"],
            "train_text_encoder": not options.get("text_encoder"),
        }
        return checked_options("masked", options, defaults)

    # -- building, saving, loading ---------------------------------------------------------
    def build(self, preset: str, options: dict[str, Any]) -> Model:
        from diffusers import AmusedScheduler, VQModel

        from emu_cli.kit.reconstruction import PatchDiscriminator
        from emu_cli.kit.text import build_text_encoder, load_text_encoder, offline_clip_tokenizer
        from emu_masked_transformer.uvit import PositionalUVit2DModel

        chosen = self._options(preset, options)
        spec = PRESETS[preset]
        vq_spec = spec["vq"]
        depth = len(vq_spec["block_out_channels"])
        vq = VQModel(
            down_block_types=("DownEncoderBlock2D",) * depth,
            up_block_types=("UpDecoderBlock2D",) * depth,
            sample_size=spec["resolution"],
            mid_block_add_attention=False,
            lookup_from_codebook=True,  # AmusedPipeline decodes token ids through the codebook
            **vq_spec,
        )
        if chosen["text_encoder"]:
            tokenizer, text_encoder = load_text_encoder(chosen["text_encoder"], projection=True)
        else:
            tokenizer = offline_clip_tokenizer(spec["max_tokens"])
            text_encoder = build_text_encoder(spec["text_encoder"], "clip-projection")
        codebook = vq_spec["num_vq_embeddings"]
        transformer_spec = dict(spec["transformer"])
        encode_dim = transformer_spec.pop("micro_cond_encode_dim")
        transformer = PositionalUVit2DModel(
            codebook_size=codebook,
            vocab_size=codebook + 1,  # the last id is the mask token
            sample_size=spec["resolution"] // 2 ** (depth - 1),
            cond_embed_dim=text_encoder.config.projection_dim,
            encoder_hidden_size=text_encoder.config.hidden_size,
            micro_cond_encode_dim=encode_dim,
            micro_cond_embed_dim=5 * encode_dim,  # five micro-conditions, each encoded
            **transformer_spec,
        )
        components = {
            "vqvae": vq,
            "tokenizer": tokenizer,
            "text_encoder": text_encoder,
            "transformer": transformer,
            "scheduler": AmusedScheduler(mask_token_id=codebook, masking_schedule="cosine"),
        }
        if chosen["adversarial_weight"] > 0:
            components[DISCRIMINATOR] = PatchDiscriminator()
        return Model(self.name, components, {"preset": preset, **chosen})

    def pipeline(self, model: Model) -> Any:
        from diffusers import AmusedPipeline

        logging.getLogger("diffusers.pipelines.pipeline_utils").addFilter(_QUIET)
        pipe = AmusedPipeline(
            vqvae=model["vqvae"],
            tokenizer=model["tokenizer"],
            text_encoder=model["text_encoder"],
            transformer=model["transformer"],
            scheduler=model["scheduler"],
        )
        pipe.set_progress_bar_config(disable=True)
        return pipe

    def save(self, model: Model, path: Path) -> None:
        self.pipeline(model).save_pretrained(path, safe_serialization=True)
        if DISCRIMINATOR in model.components:
            model[DISCRIMINATOR].save(path)

    def load(self, path: Path) -> Model:
        from diffusers import AmusedPipeline

        # A folder built here names its transformer emu_masked_transformer.uvit's class, which
        # diffusers resolves only from modules already imported.
        import emu_masked_transformer.uvit  # noqa: F401
        from emu_cli.kit.reconstruction import PatchDiscriminator

        logging.getLogger("diffusers.pipelines.pipeline_utils").addFilter(_QUIET)
        path = Path(path)
        index = path / "model_index.json"
        if not index.is_file():
            raise ValueError(
                f"'{path}' has no model_index.json: not a masked-transformer checkpoint"
            )
        pipeline_class = json.loads(index.read_text()).get("_class_name")
        if pipeline_class != PIPELINE_CLASS:
            raise ValueError(f"'{path}' holds a {pipeline_class}, not an {PIPELINE_CLASS}")
        components = dict(AmusedPipeline.from_pretrained(path).components)
        discriminator = PatchDiscriminator.load(path)
        if discriminator is not None:
            components[DISCRIMINATOR] = discriminator
        return Model(self.name, components, {})

    def adopt(self, path: Path, pipeline_class: str) -> dict[str, Any] | None:
        """An aMUSEd folder made elsewhere (``amused/amused-256``, ``-512`` or a fine-tune): its
        text encoder frozen, no tokenizer discriminator, its size as AmusedPipeline computes it
        (the transformer's token grid times the tokenizer's downsampling)."""
        if pipeline_class != PIPELINE_CLASS:
            return None
        vq, transformer = component_config(path, "vqvae"), component_config(path, "transformer")
        options = {**DEFAULT_OPTIONS, "train_text_encoder": False, "adversarial_weight": 0.0}
        return adopted_provenance(self, PRESETS, transformer["sample_size"], vq, options)

    # -- training ----------------------------------------------------------------------------
    def encode(self, model: Model, stage: str, images: torch.Tensor, captions: list[str]) -> dict:
        from emu_cli.kit.text import token_ids
        from emu_masked_transformer.tokenizer import tokenize

        if stage == "tokenizer":
            return {"pixels": images}
        return {
            "tokens": tokenize(model["vqvae"], images),
            "input_ids": token_ids(model["tokenizer"], captions, images.device),
        }

    def training_module(self, model: Model, stage: str, recipe: Recipe) -> nn.Module:
        from emu_cli.kit.text import text_encoder_training
        from emu_masked_transformer.tokenizer import TokenizerTraining
        from emu_masked_transformer.transformer import MaskedTokenTraining

        for component in ("vqvae", "transformer", "text_encoder"):
            model[component].requires_grad_(False)
        options = model.options
        if stage == "tokenizer":
            model["vqvae"].requires_grad_(True)
            return TokenizerTraining(
                model["vqvae"],
                model.components.get(DISCRIMINATOR),
                float(options.get("adversarial_weight", 0.0)),
            )
        if stage == "transformer":
            model["transformer"].requires_grad_(True)
            train_text, text_rate = text_encoder_training(model)
            vq = model["vqvae"]
            return MaskedTokenTraining(
                model["transformer"],
                model["text_encoder"],
                mask_token_id=model["scheduler"].config.mask_token_id,
                image_size=vq.config.sample_size,
                train_text_encoder=train_text,
                text_encoder_lr_scale=text_rate,
                label_smoothing=float(options.get("label_smoothing", 0.1)),
            )
        raise ValueError(f"backend 'masked' has no stage '{stage}'")

    # -- looking at results ------------------------------------------------------------------
    def sample(
        self,
        model: Model,
        prompts: list[str],
        *,
        steps: int,
        guidance: float,
        seeds: list[int],
        device: torch.device,
    ) -> list[Image.Image]:
        from emu_cli.kit.diffusion import pipeline_samples
        from emu_masked_transformer.sampling import PerImageAmusedScheduler

        pipe = self.pipeline(model)
        pipe.scheduler = PerImageAmusedScheduler.from_config(pipe.scheduler.config)
        return pipeline_samples(
            pipe, prompts, seeds, device, num_inference_steps=steps, guidance_scale=guidance
        )

    def reconstruct(self, model: Model, images: torch.Tensor) -> torch.Tensor:
        import torch

        from emu_masked_transformer.tokenizer import detokenize, tokenize

        with torch.no_grad():
            return detokenize(model["vqvae"], tokenize(model["vqvae"], images))

    def preview(
        self, model: Model, stage: str, images: torch.Tensor, captions: list[str], seed: int
    ) -> tuple[list[Image.Image], dict[str, float]]:
        if stage != "tokenizer":
            return super().preview(model, stage, images, captions, seed)
        import torch

        from emu_cli.kit.reconstruction import psnr, to_images
        from emu_masked_transformer.tokenizer import detokenize, tokenize

        vq = model["vqvae"]
        with torch.no_grad():  # one tokenization for both the images and the codebook usage
            tokens = tokenize(vq, images)
            reconstruction = detokenize(vq, tokens)
        codes = vq.config.num_vq_embeddings
        metrics = {
            "psnr": float(psnr(reconstruction, images).mean()),
            "codebook_usage": float(len(tokens.unique()) / codes),
        }
        return to_images(torch.cat([images, reconstruction.clamp(-1, 1)])), metrics
