"""Pixel diffusion as Imagen: a text-conditioned UNet2DConditionModel on RGB pixels at the base
resolution (stage ``denoiser``), then optionally a super-resolution UNet (stage ``superres``).
Checkpoints are ``PixelDiffusionPipeline`` folders; DeepFloyd IF's stage I folders made
elsewhere are adopted too (``deepfloyd.py``)."""

from __future__ import annotations

import json
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
from emu_pixel_diffusion.presets import PRESETS, STAGE_DEFAULTS

if TYPE_CHECKING:
    import torch
    from PIL import Image
    from torch import nn

PIPELINE_CLASS = "PixelDiffusionPipeline"
# Options a user may set (`--option KEY=VALUE` or `model_options:` in a config), with defaults.
# v-prediction with soft min-SNR weighting is what pixel models train best with.
DEFAULT_OPTIONS: dict[str, Any] = {
    "text_encoder": None,  # a pretrained CLIP text model or T5 encoder: hub name or folder
    "text_encoder_kind": "clip",  # built from config when no text_encoder is given: clip or t5
    "train_text_encoder": None,  # default: trained when built here, frozen when pretrained
    "text_encoder_lr_scale": 1.0,  # the trained text encoder's rate, relative to the stage's
    "prediction_type": "v_prediction",
    "snr_weighting": "soft-min",
    "snr_gamma": 5.0,
    "superres_factor": None,  # default: the preset's (2 tiny, off small, 4 base)
    "max_augmentation": 250,  # noise-conditioning augmentation of the low-resolution input
}


class PixelDiffusion(Backend):
    name = "pixel"
    description = "Pixel diffusion (Imagen-like): text-conditioned UNet on RGB + super-resolution"
    # token ids, or a frozen text encoder's outputs; the rest encodes images
    caption_encodings = ("input_ids", "states")
    stages = (
        Stage("denoiser", "text-conditioned UNet on pixels", STAGE_DEFAULTS["denoiser"]),
        Stage(
            "superres",
            "super-resolution UNet on the upsampled base image (noise-conditioning augmentation)",
            STAGE_DEFAULTS["superres"],
        ),
    )

    # Appeal is decided at the base resolution; the super-resolution stage only adds detail.
    quality_tune_stage = "denoiser"
    # As with the masked backend, guidance 5 hides part of what quality-tuning teaches: drawing
    # the demo's first 64 curated captions, the tuned model's judged appeal led the pre-trained
    # one's by 0.05 at 5 and by 0.15 at 2, and was highest at 1.5-2 (0.67 against 0.62 at 5).
    # Recognisability holds at 2 (GPU-trained small models: color 0.91-0.93, background
    # 0.99-1.00, against 0.97-0.99 and 1.00 at 5); docs/results.md.
    default_guidance = 2.0

    def default_stages(self, preset: str, options: dict[str, Any]) -> list[str]:
        factor = self._options(preset, options)["superres_factor"]
        return ["denoiser", "superres"] if factor > 1 else ["denoiser"]

    @staticmethod
    def _options(preset: str, options: dict[str, Any]) -> dict[str, Any]:
        if preset not in PRESETS:
            raise ValueError(f"unknown preset '{preset}' (presets: {', '.join(PRESETS)})")
        defaults = {
            **DEFAULT_OPTIONS,
            "superres_factor": PRESETS[preset]["superres_factor"],
            "train_text_encoder": not options.get("text_encoder"),
        }
        chosen = checked_options("pixel", options, defaults)
        if chosen["superres_factor"] not in (1, 2, 4):
            raise ValueError(
                f"superres_factor must be 1 (off), 2 or 4, got {chosen['superres_factor']!r}"
            )
        chosen["superres_factor"] = int(chosen["superres_factor"])
        if chosen["prediction_type"] == "flow_prediction":
            # its super-resolution stage noise-augments its input on the DDPM schedule
            raise ValueError(
                "pixel takes prediction_type epsilon or v_prediction; flow_prediction is the "
                "latent backend's (docs/backends.md)"
            )
        return chosen

    # -- building, saving, loading ---------------------------------------------------------
    def build(self, preset: str, options: dict[str, Any]) -> Model:
        from diffusers import DPMSolverMultistepScheduler, UNet2DConditionModel

        from emu_cli.kit.diffusion import (
            check_objective,
            pooled_text_conditioning,
            scheduler_config,
        )
        from emu_cli.kit.text import build_text_encoder, load_text_encoder, offline_clip_tokenizer

        chosen = self._options(preset, options)
        spec = PRESETS[preset]
        if chosen["text_encoder"]:
            tokenizer, text_encoder = load_text_encoder(chosen["text_encoder"])
        else:
            kind = chosen["text_encoder_kind"]
            tokenizer = offline_clip_tokenizer(spec["max_tokens"])
            config = spec["t5_encoder"] if kind == "t5" else spec["text_encoder"]
            text_encoder = build_text_encoder(config, kind)
        check_objective(chosen["prediction_type"], chosen["snr_weighting"], chosen["snr_gamma"])
        width = text_encoder.config.hidden_size  # T5's config maps it to d_model
        schedule = scheduler_config(chosen["prediction_type"], thresholding=True)
        components: dict[str, Any] = {
            "unet": UNet2DConditionModel(
                sample_size=spec["resolution"],
                in_channels=3,
                out_channels=3,
                cross_attention_dim=width,
                **pooled_text_conditioning(width),
                **spec["unet"],
            ),
            "text_encoder": text_encoder,
            "tokenizer": tokenizer,
            "scheduler": DPMSolverMultistepScheduler(**schedule),
        }
        factor = chosen["superres_factor"]
        if factor > 1:
            components["sr_unet"] = UNet2DConditionModel(
                sample_size=spec["resolution"] * factor,
                in_channels=6,  # the noisy high-resolution image and the upsampled low one
                out_channels=3,
                cross_attention_dim=width,
                class_embed_type="timestep",  # the augmentation level
                **spec["superres_unet"],
            )
            components["sr_scheduler"] = DPMSolverMultistepScheduler(**schedule)
        return Model(self.name, components, {"preset": preset, **chosen})

    def pipeline(self, model: Model) -> Any:
        from emu_pixel_diffusion import deepfloyd
        from emu_pixel_diffusion.pipeline import PixelDiffusionPipeline

        if deepfloyd.is_if(model):
            pipe = deepfloyd.pipeline(model)
            pipe.set_progress_bar_config(disable=True)
            return pipe
        pipe = PixelDiffusionPipeline(
            unet=model["unet"],
            text_encoder=model["text_encoder"],
            tokenizer=model["tokenizer"],
            scheduler=model["scheduler"],
            sr_unet=model.components.get("sr_unet"),
            sr_scheduler=model.components.get("sr_scheduler"),
        )
        pipe.set_progress_bar_config(disable=True)
        return pipe

    def save(self, model: Model, path: Path) -> None:
        self.pipeline(model).save_pretrained(path, safe_serialization=True)

    def load(self, path: Path) -> Model:
        from diffusers import IFPipeline

        from emu_cli.kit.diffusion import pipeline_components
        from emu_pixel_diffusion import deepfloyd
        from emu_pixel_diffusion.pipeline import PixelDiffusionPipeline

        path = Path(path)
        index = path / "model_index.json"
        if not index.is_file():
            raise ValueError(f"'{path}' has no model_index.json: not a pixel-diffusion checkpoint")
        pipeline_class = json.loads(index.read_text()).get("_class_name")
        if pipeline_class == deepfloyd.PIPELINE:  # its safety checker and watermarker not kept
            left_out = dict.fromkeys(("safety_checker", "feature_extractor", "watermarker"))
            components = pipeline_components(IFPipeline, path, **left_out)
            return Model(self.name, components, {"pipeline": deepfloyd.PIPELINE})
        if pipeline_class != PIPELINE_CLASS:
            raise ValueError(
                f"'{path}' holds a {pipeline_class}, not a {PIPELINE_CLASS} or {deepfloyd.PIPELINE}"
            )
        return Model(self.name, pipeline_components(PixelDiffusionPipeline, path), {})

    def adopt(self, path: Path, pipeline_class: str) -> dict[str, Any] | None:
        """DeepFloyd IF's stage I made elsewhere (``DeepFloyd/IF-I-XL-v1.0``): its epsilon
        objective, no SNR weighting, T5 frozen, no super-resolution stage of its own, its size
        from the UNet's (64 px: the ``small`` quality-tuning preset)."""
        from emu_pixel_diffusion import deepfloyd

        if pipeline_class != deepfloyd.PIPELINE:
            return None
        unet = component_config(path, "unet")
        scheduler = component_config(path, "scheduler", "scheduler_config.json")
        options = {
            **DEFAULT_OPTIONS,
            "text_encoder_kind": "t5",
            "train_text_encoder": False,
            "prediction_type": scheduler.get("prediction_type", "epsilon"),
            "snr_weighting": "none",
            "superres_factor": 1,
            "pipeline": deepfloyd.PIPELINE,
        }
        return adopted_provenance(
            self, PRESETS, unet["sample_size"], None, options, stages=["denoiser"]
        )

    # -- training ----------------------------------------------------------------------------
    def prepare_stage(
        self, model: Model, stage: str, images: torch.Tensor, captions: list[str]
    ) -> None:
        """Generate at the size the stage trains at (the preset's may have been overridden)."""
        unet = {"denoiser": "unet", "superres": "sr_unet"}.get(stage)
        if unet in model.components:
            model[unet].register_to_config(sample_size=images.shape[-1])

    def encode(self, model: Model, stage: str, images: torch.Tensor, captions: list[str]) -> dict:
        from emu_cli.kit.text import text_inputs
        from emu_pixel_diffusion import deepfloyd
        from emu_pixel_diffusion.pipeline import low_resolution_view

        text = (deepfloyd.text_states if deepfloyd.is_if(model) else text_inputs)(
            model, captions, images.device
        )
        batch = {"pixels": images, **text}
        if stage == "superres":
            batch["low"] = low_resolution_view(images, self._factor(model))
        return batch

    def encoding_components(self, model: Model, stage: str) -> tuple[str, ...]:
        """Frozen text encoders: ``encode`` runs them, the denoisers' steps never do."""
        from emu_cli.kit.text import frozen_text_encoders

        return frozen_text_encoders(model)

    def size_multiple(self, model: Model, stage: str) -> int | None:
        """The UNet's downsampling; the super-resolution stage's low-resolution view must be
        divided by it too."""
        unet = model["sr_unet" if stage == "superres" else "unet"]
        multiple = 2 ** (len(unet.config.down_block_types) - 1)
        return multiple * self._factor(model) if stage == "superres" else multiple

    def _factor(self, model: Model) -> int:
        if "sr_unet" not in model.components:
            raise ValueError(
                "this pixel model has no super-resolution stage; build it with "
                "--option superres_factor=2 (or 4)"
            )
        return model["sr_unet"].config.sample_size // model["unet"].config.sample_size

    def training_module(self, model: Model, stage: str, recipe: Recipe) -> nn.Module:
        from diffusers import DDPMScheduler

        from emu_cli.kit.diffusion import TextConditionedDenoising
        from emu_cli.kit.text import text_encoder_training
        from emu_pixel_diffusion import deepfloyd
        from emu_pixel_diffusion.superres import SuperResolutionDenoising

        options = model.options
        for name in ("unet", "sr_unet"):
            if name in model.components:
                model[name].requires_grad_(False)
        train_text, text_rate = text_encoder_training(model)
        text_encoder = model["text_encoder"] if train_text else None  # else encode runs it
        common = {
            "noise_offset": recipe.noise_offset,
            "train_text_encoder": train_text,
            "text_encoder_lr_scale": text_rate,
            "snr_weighting": options.get("snr_weighting", "none"),
            "snr_gamma": float(options.get("snr_gamma", 5.0)),
        }
        if stage == "denoiser":
            model["unet"].requires_grad_(True)
            schedule = DDPMScheduler.from_config(model["scheduler"].config)
            denoising = (
                deepfloyd.IFDenoising if deepfloyd.is_if(model) else TextConditionedDenoising
            )
            return denoising(model["unet"], text_encoder, schedule, key="pixels", **common)
        if stage == "superres":
            self._factor(model)
            model["sr_unet"].requires_grad_(True)
            schedule = DDPMScheduler.from_config(model["sr_scheduler"].config)
            return SuperResolutionDenoising(
                model["sr_unet"],
                text_encoder,
                schedule,
                key="pixels",
                max_augmentation=int(options.get("max_augmentation", 250)),
                **common,
            )
        raise ValueError(f"backend 'pixel' has no stage '{stage}'")

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
        from emu_pixel_diffusion import deepfloyd

        # IF's pipeline would clean captions with packages it does not install; trained uncleaned
        extra = {"clean_caption": False} if deepfloyd.is_if(model) else {}
        return pipeline_samples(
            self.pipeline(model),
            prompts,
            seeds,
            device,
            num_inference_steps=steps,
            guidance_scale=guidance,
            **extra,
        )
