"""Latent diffusion as Emu pre-trains it: an AutoencoderKL (stage 1), then a text-conditioned
UNet2DConditionModel on its latents (stage 2). Checkpoints are StableDiffusionPipeline folders;
Stable Diffusion XL (``xl.py``) and 3 (``sd3.py``) and Flux.1 (``flux.py``) folders made
elsewhere are adopted too."""

from __future__ import annotations

import copy
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
from emu_latent_diffusion.presets import PRESETS, STAGE_DEFAULTS

if TYPE_CHECKING:
    import torch
    from PIL import Image
    from torch import nn

    from emu_cli.data.framing import Framing

# torch, diffusers and the model code are imported inside the methods: registering this
# backend must stay cheap so that `emu --help` and `emu backends` answer at once.

DISCRIMINATOR = "discriminator"
# The diffusers pipelines whose folders this backend loads: what it writes, and the open
# models': those with a transformer for a denoiser keep their own flow-matching sampler.
PIPELINES = ("StableDiffusionPipeline", "StableDiffusionXLPipeline")
TRANSFORMER_PIPELINES = ("StableDiffusion3Pipeline", "FluxPipeline")
# Options a user may set (`--option KEY=VALUE` or `model_options:` in a config), with defaults;
# None: the preset's.
DEFAULT_OPTIONS: dict[str, Any] = {
    "text_encoder": None,  # a pretrained CLIP text model: hub name or folder
    "train_text_encoder": None,  # default: trained when built here, frozen when pretrained
    "text_encoder_lr_scale": 1.0,  # the trained text encoder's rate, relative to the stage's
    "prediction_type": "v_prediction",  # or epsilon, or flow_prediction (rectified flow)
    "snr_weighting": None,  # soft-min; none for flow_prediction
    "snr_gamma": 5.0,
    "fourier_frequencies": None,  # of the autoencoder's input lift
    "adversarial_weight": None,  # patch-GAN weight in the autoencoder stage
    "vae": {},  # AutoencoderKL arguments over the preset's
    "unet": {},  # UNet2DConditionModel arguments over the preset's
}


class LatentDiffusion(Backend):
    name = "latent"
    description = "Latent diffusion (Emu): 16-channel AutoencoderKL + UNet2DConditionModel"
    # token ids, or a frozen text encoder's outputs; the rest encodes images
    caption_encodings = ("input_ids", "states", "pooled")
    reads_framing = True  # SDXL's size and crop micro-conditioning
    stages = (
        Stage(
            "autoencoder",
            "AutoencoderKL with Fourier-lifted input",
            STAGE_DEFAULTS["autoencoder"],
            reads_captions=False,
        ),
        Stage("denoiser", "text-conditioned UNet on latents", STAGE_DEFAULTS["denoiser"]),
    )
    # At the shared rate (1e-4 at small) the denoiser's judged appeal stalls early; at three
    # times it rises longer and the panel prefers the tuned model more often. The pixel
    # denoiser peaks early at 3x, so it keeps the shared rate (docs/results.md).
    quality_tune_lr_scale = 3.0

    # -- building, saving, loading ---------------------------------------------------------
    def build(self, preset: str, options: dict[str, Any]) -> Model:
        from diffusers import AutoencoderKL, DPMSolverMultistepScheduler, UNet2DConditionModel

        from emu_cli.kit.diffusion import (
            FLOW,
            check_objective,
            pooled_text_conditioning,
            scheduler_config,
        )
        from emu_cli.kit.reconstruction import PatchDiscriminator
        from emu_cli.kit.text import build_text_encoder, load_text_encoder, offline_clip_tokenizer
        from emu_latent_diffusion.autoencoder import lifted_channels

        if preset not in PRESETS:
            raise ValueError(f"unknown preset '{preset}' (presets: {', '.join(PRESETS)})")
        spec = PRESETS[preset]
        defaults = {
            **DEFAULT_OPTIONS,
            # a flow model weights its timesteps by sampling them: no SNR weighting by default
            "snr_weighting": "none" if options.get("prediction_type") == FLOW else "soft-min",
            "fourier_frequencies": spec["fourier_frequencies"],
            "adversarial_weight": spec["adversarial_weight"],
            "train_text_encoder": not options.get("text_encoder"),
        }
        options = checked_options(self.name, options, defaults)
        prediction = options["prediction_type"]
        weighting = options["snr_weighting"]
        gamma = float(options["snr_gamma"])
        check_objective(prediction, weighting, gamma)
        frequencies = int(options["fourier_frequencies"])
        vae_spec = {**spec["vae"], **options["vae"]}
        depth = len(vae_spec["block_out_channels"])
        vae = AutoencoderKL(
            in_channels=lifted_channels(frequencies),
            out_channels=3,
            down_block_types=("DownEncoderBlock2D",) * depth,
            up_block_types=("UpDecoderBlock2D",) * depth,
            sample_size=spec["resolution"],
            **vae_spec,
        )
        if options["text_encoder"]:
            tokenizer, text_encoder = load_text_encoder(options["text_encoder"])
        else:
            tokenizer = offline_clip_tokenizer(spec["max_tokens"])
            text_encoder = build_text_encoder(spec["text_encoder"])
        unet_spec = {**spec["unet"], **options["unet"]}
        unet = UNet2DConditionModel(
            sample_size=spec["resolution"] // 2 ** (depth - 1),
            in_channels=vae_spec["latent_channels"],
            out_channels=vae_spec["latent_channels"],
            cross_attention_dim=text_encoder.config.hidden_size,
            **pooled_text_conditioning(text_encoder.config.hidden_size),
            **unet_spec,
        )
        components = {
            "vae": vae,
            "unet": unet,
            "text_encoder": text_encoder,
            "tokenizer": tokenizer,
            "scheduler": DPMSolverMultistepScheduler(**scheduler_config(prediction)),
        }
        adversarial = float(options["adversarial_weight"])
        if adversarial > 0:
            components[DISCRIMINATOR] = PatchDiscriminator()
        return Model(
            self.name,
            components,
            {
                "preset": preset,
                **options,
                "fourier_frequencies": frequencies,
                "adversarial_weight": adversarial,
                "snr_gamma": gamma,
                "latent_scale_calibrated": False,
            },
        )

    def pipeline(self, model: Model) -> Any:
        from diffusers import StableDiffusionPipeline

        family = _open_family(model)
        if family is not None:
            pipe = family.pipeline(model)
            pipe.set_progress_bar_config(disable=True)
            return pipe
        pipe = StableDiffusionPipeline(
            vae=model["vae"],
            text_encoder=model["text_encoder"],
            tokenizer=model["tokenizer"],
            unet=model["unet"],
            scheduler=model["scheduler"],
            safety_checker=None,
            feature_extractor=None,
            requires_safety_checker=False,
        )
        pipe.set_progress_bar_config(disable=True)
        return pipe

    def save(self, model: Model, path: Path) -> None:
        self.pipeline(model).save_pretrained(path, safe_serialization=True)
        if DISCRIMINATOR in model.components:
            model[DISCRIMINATOR].save(path)

    def load(self, path: Path) -> Model:
        from diffusers import (
            AutoencoderKL,
            DiffusionPipeline,
            DPMSolverMultistepScheduler,
            UNet2DConditionModel,
        )
        from transformers import CLIPTextModel, CLIPTokenizer

        from emu_cli.kit.diffusion import pipeline_components
        from emu_cli.kit.reconstruction import PatchDiscriminator
        from emu_latent_diffusion import xl

        path = Path(path)
        index = path / "model_index.json"
        if not index.is_file():
            raise ValueError(f"'{path}' has no model_index.json: not a latent-diffusion checkpoint")
        pipeline_class = json.loads(index.read_text()).get("_class_name")
        known = PIPELINES + TRANSFORMER_PIPELINES
        if pipeline_class not in known:
            raise ValueError(f"'{path}' holds a {pipeline_class}, not a {' or '.join(known)}")
        if pipeline_class in TRANSFORMER_PIPELINES:
            return Model(self.name, pipeline_components(DiffusionPipeline, path), {})
        components = {
            "vae": AutoencoderKL.from_pretrained(path / "vae"),
            "unet": UNet2DConditionModel.from_pretrained(path / "unet"),
            "text_encoder": CLIPTextModel.from_pretrained(path / "text_encoder"),
            "tokenizer": CLIPTokenizer.from_pretrained(path / "tokenizer"),
            "scheduler": DPMSolverMultistepScheduler.from_pretrained(path / "scheduler"),
        }
        if pipeline_class == xl.PIPELINE:
            components |= xl.load_second_encoder(path)
            return Model(self.name, components, xl.pipeline_options(path))
        discriminator = PatchDiscriminator.load(path)
        if discriminator is not None:
            components[DISCRIMINATOR] = discriminator
        return Model(self.name, components, {})

    def adopt(self, path: Path, pipeline_class: str) -> dict[str, Any] | None:
        """A Stable Diffusion folder made elsewhere (SD 1.x, 2.x: one CLIP text encoder; SDXL:
        two; SD3 and Flux: a transformer under three or two): its objective from the scheduler
        (epsilon or v, no SNR weighting, as those were trained; flow for a transformer), its
        text encoders frozen, the Fourier lift read off the autoencoder's input channels (0
        for a plain one), the quality-tuning preset the largest whose resolution it reaches
        (Stable Diffusion's 512 px: ``base``, the paper's recipe)."""
        from emu_cli.kit.diffusion import FLOW

        if pipeline_class not in PIPELINES + TRANSFORMER_PIPELINES:
            return None
        transformer = pipeline_class in TRANSFORMER_PIPELINES
        vae = component_config(path, "vae")
        denoiser = component_config(path, "transformer" if transformer else "unet")
        scheduler = component_config(path, "scheduler", "scheduler_config.json")
        if transformer:  # FlowMatchEulerDiscreteScheduler names no objective
            scheduler = {"prediction_type": FLOW}
        lift = int(vae.get("in_channels", 3)) - 3
        if lift % 6:
            raise ValueError(
                f"'{path}': an autoencoder with {lift + 3} input channels is neither RGB nor "
                "RGB with a Fourier lift (3 + 6 per frequency)"
            )
        options = {
            **DEFAULT_OPTIONS,
            "prediction_type": scheduler.get("prediction_type", "epsilon"),
            "snr_weighting": "none",
            "train_text_encoder": False,
            "fourier_frequencies": lift // 6,
            "adversarial_weight": 0.0,
            "latent_scale_calibrated": True,  # its scaling factor came with it
        }
        return adopted_provenance(self, PRESETS, _grid(denoiser), vae, options)

    # -- training ----------------------------------------------------------------------------
    def encode(
        self,
        model: Model,
        stage: str,
        images: torch.Tensor,
        captions: list[str],
        framings: list[Framing] | None = None,
    ) -> dict:
        from emu_cli.kit.text import text_inputs
        from emu_latent_diffusion import xl
        from emu_latent_diffusion.autoencoder import fourier_lift

        if stage == "autoencoder":
            return {"pixels": images}
        vae = model["vae"]
        lifted = fourier_lift(images, model.options["fourier_frequencies"])
        # SD3's and Flux's autoencoders centre their latents by a shift before scaling them
        shift = vae.config.get("shift_factor") or 0.0
        latents = (vae.encode(lifted).latent_dist.mode() - shift) * vae.config.scaling_factor
        family = _open_family(model)
        if family is None:
            return {"latents": latents, **text_inputs(model, captions, images.device)}
        encoded = {"latents": latents, **family.text_states(model, captions, images.device)}
        if family is xl:
            encoded["time_ids"] = xl.time_ids(framings, images)
        return encoded

    def encoding_components(self, model: Model, stage: str) -> tuple[str, ...]:
        """Frozen text encoders: ``encode`` runs them, the denoiser's steps never do."""
        from emu_cli.kit.text import frozen_text_encoders

        return frozen_text_encoders(model) if stage == "denoiser" else ()

    def size_multiple(self, model: Model, stage: str) -> int | None:
        """Both stages are convolutional and take any shape whose sides the autoencoder (and,
        for the denoiser, the UNet's downsampling on its latents) divides."""
        from emu_latent_diffusion import flux

        encoder = 2 ** (len(model["vae"].config.block_out_channels) - 1)
        if stage == "autoencoder":
            return encoder
        if "transformer" in model.components:  # patches of latents; Flux packs 2 x 2 of them
            config = model["transformer"].config
            return encoder * (2 if flux.is_flux(model) else config.patch_size)
        return encoder * 2 ** (len(model["unet"].config.down_block_types) - 1)

    def prepare_stage(
        self, model: Model, stage: str, images: torch.Tensor, captions: list[str]
    ) -> None:
        """Before the denoiser trains: generate at the size it trains at (the preset's size
        may have been overridden), and scale latents to unit variance, as diffusion expects."""
        import torch

        from emu_latent_diffusion.autoencoder import fourier_lift

        if stage != "denoiser":
            return
        vae = model["vae"]
        downsampling = 2 ** (len(vae.config.block_out_channels) - 1)
        model[_denoiser(model)].register_to_config(sample_size=images.shape[-1] // downsampling)
        if model.options.get("latent_scale_calibrated"):
            return
        with torch.no_grad():
            lifted = fourier_lift(images, model.options["fourier_frequencies"])
            latents = vae.encode(lifted).latent_dist.mode()
        vae.register_to_config(scaling_factor=float(1.0 / latents.std().clamp_min(1e-6)))
        model.options["latent_scale_calibrated"] = True

    def training_module(self, model: Model, stage: str, recipe: Recipe) -> nn.Module:
        from diffusers import DDPMScheduler

        from emu_cli.kit.diffusion import TextConditionedDenoising
        from emu_cli.kit.text import TEXT_ENCODERS, text_encoder_training
        from emu_latent_diffusion import flux, sd3, xl
        from emu_latent_diffusion.autoencoder import AutoencoderTraining

        for component in ("vae", "unet", "transformer", *TEXT_ENCODERS):
            if component in model.components:
                model[component].requires_grad_(False)
        if stage == "autoencoder":
            model["vae"].requires_grad_(True)
            discriminator = model.components.get(DISCRIMINATOR)
            return AutoencoderTraining(
                model["vae"],
                model.options["fourier_frequencies"],
                discriminator=discriminator,
                adversarial_weight=model.options.get("adversarial_weight", 0.0),
            )
        if stage == "denoiser":
            model[_denoiser(model)].requires_grad_(True)
            if "transformer" in model.components:  # on its flow-matching scheduler's sigmas
                denoising = sd3.SD3Denoising if sd3.is_sd3(model) else flux.FluxDenoising
                return denoising(
                    model["transformer"],
                    model["scheduler"],
                    key="latents",
                    noise_offset=recipe.noise_offset,
                )
            noise_schedule = DDPMScheduler.from_config(model["scheduler"].config)
            objective = {
                "snr_weighting": model.options.get("snr_weighting", "none"),
                "snr_gamma": float(model.options.get("snr_gamma", 5.0)),
            }
            if xl.is_xl(model):
                return xl.XLDenoising(
                    model["unet"],
                    noise_schedule,
                    key="latents",
                    noise_offset=recipe.noise_offset,
                    **objective,
                )
            train_text, text_rate = text_encoder_training(model)
            return TextConditionedDenoising(
                model["unet"],
                model["text_encoder"] if train_text else None,
                noise_schedule,
                key="latents",
                noise_offset=recipe.noise_offset,
                train_text_encoder=train_text,
                text_encoder_lr_scale=text_rate,
                **objective,
            )
        raise ValueError(f"backend 'latent' has no stage '{stage}'")

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

        pipe = self.pipeline(model)
        # A private scheduler copy: DPM-Solver keeps per-call state.
        pipe.scheduler = copy.deepcopy(model["scheduler"])
        resolution = _grid(model[_denoiser(model)].config) * pipe.vae_scale_factor
        return pipeline_samples(
            pipe,
            prompts,
            seeds,
            device,
            height=resolution,
            width=resolution,
            num_inference_steps=steps,
            guidance_scale=guidance,
            output_type="pil",
        )

    def reconstruct(self, model: Model, images: torch.Tensor) -> torch.Tensor:
        import torch

        from emu_latent_diffusion.autoencoder import fourier_lift

        vae = model["vae"]
        with torch.no_grad():
            lifted = fourier_lift(images, model.options["fourier_frequencies"])
            return vae.decode(vae.encode(lifted).latent_dist.mode()).sample

    def preview(
        self, model: Model, stage: str, images: torch.Tensor, captions: list[str], seed: int
    ) -> tuple[list[Image.Image], dict[str, float]]:
        if stage != "autoencoder":
            return super().preview(model, stage, images, captions, seed)
        import torch

        from emu_cli.kit.reconstruction import psnr, to_images

        reconstruction = self.reconstruct(model, images)
        value = float(psnr(reconstruction, images).mean())
        # Originals above their reconstructions.
        return to_images(torch.cat([images, reconstruction])), {"psnr": value}


def _denoiser(model: Model) -> str:
    """The component that denoises: SD's and SDXL's UNet, SD3's transformer."""
    return "transformer" if "transformer" in model.components else "unet"


def _open_family(model: Model) -> Any:
    """The module of an open model's family (``xl``, ``sd3``, ``flux``); None for SD 1.x and
    2.x, and for the models emu builds."""
    from emu_latent_diffusion import flux, sd3, xl

    if xl.is_xl(model):
        return xl
    if sd3.is_sd3(model):
        return sd3
    return flux if flux.is_flux(model) else None


def _grid(denoiser_config: Any) -> int:
    """The side in latents a denoiser draws at: its config's ``sample_size``. Flux's records
    none (emu writes the size it tuned at); its pipeline's default is 128, 1024 px."""
    from emu_latent_diffusion import flux

    return int(denoiser_config.get("sample_size") or flux.DEFAULT_GRID)
