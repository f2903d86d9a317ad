"""Training-side diffusion math shared by every diffusion backend (latent and pixel).

Keeping it here means the recipe's noise offset, prediction targets and loss weighting behave the
same for every model family. Three objectives: DDPM with an epsilon or a v target, and flow
matching (``flow_prediction``, rectified flow as SD3 and Flux train: the sample moves on a
straight line from the image to noise, the model predicts the velocity ``noise - image``).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from emu_cli.errors import EmuError

FLOW = "flow_prediction"  # diffusers' name for a velocity target on flow sigmas
PREDICTION_TYPES = ("epsilon", "v_prediction", FLOW)
# what ``encode`` may give of a frozen text encoder's run (kit.text.text_inputs, the families')
TEXT_OUTPUTS = ("states", "pooled")


def scheduler_config(prediction_type: str, *, thresholding: bool = False) -> dict[str, Any]:
    """The noise schedule and sampler every diffusion backend builds with.

    The cosine schedule with trailing timesteps reaches (almost) zero signal at the last step,
    so the model learns to make an image's overall color and brightness from the text alone; with
    Stable Diffusion's scaled-linear schedule the mean of a small latent survives to the last
    step, the model never learns it, and a sample's background follows its starting noise rather
    than its prompt (Lin et al. 2024; docs/backends.md). A flow model samples on flow sigmas,
    which start at pure noise by construction. ``thresholding`` is Imagen's dynamic
    thresholding of the predicted clean image, for models of bounded pixels.
    """
    config: dict[str, Any] = {
        "num_train_timesteps": 1000,
        "beta_schedule": "squaredcos_cap_v2",
        "prediction_type": prediction_type,
        "algorithm_type": "dpmsolver++",
        "solver_order": 2,
        "timestep_spacing": "trailing",
        "steps_offset": 1,  # unused with trailing timesteps; StableDiffusionPipeline asks for it
    }
    if prediction_type == FLOW:  # the same sampler, stepping on sigmas from 1 to 0
        config |= {"use_flow_sigmas": True, "flow_shift": 1.0}
    if thresholding:
        config |= {
            "thresholding": True,
            "dynamic_thresholding_ratio": 0.995,
            "sample_max_value": 1.0,
        }
    return config


def pooled_text_conditioning(text_width: int) -> dict[str, Any]:
    """UNet2DConditionModel arguments that add an attention-pooled text embedding to the timestep
    embedding, as Imagen does. Cross-attention reaches only the low resolutions on a CPU budget;
    this reaches every residual block, so what a caption says about the whole picture (its
    background, its colors) conditions every resolution from the first steps of training."""
    heads = max(1, text_width // 32)
    return {"addition_embed_type": "text", "addition_embed_type_num_heads": heads}


def check_objective(prediction_type: str, snr_weighting: str, snr_gamma: float) -> None:
    """Fail at build time, not after the first batch, on a bad prediction type or weighting."""
    if prediction_type not in PREDICTION_TYPES:
        raise EmuError(
            f"prediction_type must be one of {', '.join(PREDICTION_TYPES)}, got {prediction_type!r}"
        )
    if prediction_type == FLOW and snr_weighting != "none":
        raise EmuError(
            f"prediction_type {FLOW} weights its timesteps by how it samples them (logit-normal) "
            f"and takes no SNR weighting: set snr_weighting=none, not {snr_weighting!r}"
        )
    snr_weights(torch.ones(1), snr_weighting, snr_gamma, prediction_type)


def offset_noise(
    shape: torch.Size, generator: torch.Generator, noise_offset: float, dtype: torch.dtype
) -> torch.Tensor:
    """Gaussian noise plus a per-image, per-channel constant scaled by ``noise_offset``.

    The constant lets the model learn to shift a whole image's brightness, so it can make very
    dark or very bright, high-contrast pictures (the paper: 0.02 late in pre-training, 0.1 for
    quality-tuning).
    """
    device = generator.device
    noise = torch.randn(shape, generator=generator, device=device, dtype=dtype)
    if noise_offset:
        offset = torch.randn(
            shape[0], shape[1], 1, 1, generator=generator, device=device, dtype=dtype
        )
        noise = noise + noise_offset * offset
    return noise


def snr(scheduler: Any, timesteps: torch.Tensor) -> torch.Tensor:
    alphas = scheduler.alphas_cumprod.to(timesteps.device)[timesteps]
    return alphas / (1 - alphas)


SNR_WEIGHTINGS = ("none", "min", "soft-min")


def snr_weights(
    ratio: torch.Tensor, weighting: str, gamma: float, prediction_type: str
) -> torch.Tensor:
    """Per-sample loss weights that give every timestep the weight ``w(SNR)`` in x0 terms.

    ``min`` is min-SNR (Hang et al. 2023): w = min(SNR, gamma). ``soft-min`` is its smooth
    version, w = SNR * gamma / (SNR + gamma) (Crowson et al. 2024), which pixel models train
    better with: it has no kink where the two branches meet. The weight is then divided by what
    the prediction target already carries: SNR for epsilon, SNR + 1 for v.
    """
    if weighting not in SNR_WEIGHTINGS:
        raise EmuError(f"snr_weighting must be one of {', '.join(SNR_WEIGHTINGS)}: {weighting!r}")
    if weighting == "none":
        return torch.ones_like(ratio)
    if gamma <= 0:
        raise EmuError(f"snr_gamma must be > 0 for {weighting} weighting, got {gamma}")
    if weighting == "min":
        target_weight = torch.clamp(ratio, max=gamma)
    else:
        target_weight = ratio * gamma / (ratio + gamma)
    return target_weight / (ratio + 1 if prediction_type == "v_prediction" else ratio)


def diffusion_loss(
    denoise: Any,
    clean: torch.Tensor,
    scheduler: Any,
    generator: torch.Generator,
    *,
    noise_offset: float = 0.0,
    snr_weighting: str = "none",
    snr_gamma: float = 5.0,
    **condition: Any,
) -> dict[str, torch.Tensor]:
    """Training loss for ``denoise(noisy, timesteps, **condition) -> prediction``.

    The target follows ``scheduler.config.prediction_type``: epsilon or v_prediction (DDPM,
    each sample weighted by :func:`snr_weights`), or flow_prediction (:func:`flow_loss`), as
    for a flow-matching scheduler (SD3's, Flux's).
    """
    batch = clean.shape[0]
    noise = offset_noise(clean.shape, generator, noise_offset, clean.dtype).to(clean.device)
    shift = flow_shift(scheduler)
    if shift is not None:
        return flow_loss(denoise, clean, noise, scheduler, generator, shift=shift, **condition)
    timesteps = torch.randint(
        0,
        scheduler.config.num_train_timesteps,
        (batch,),
        generator=generator,
        device=generator.device,
    ).to(clean.device)
    noisy = scheduler.add_noise(clean, noise, timesteps)
    prediction_type = scheduler.config.prediction_type
    if prediction_type == "epsilon":
        target = noise
    elif prediction_type == "v_prediction":
        target = scheduler.get_velocity(clean, noise, timesteps)
    else:
        raise EmuError(f"unsupported prediction_type '{prediction_type}'")
    prediction = denoise(noisy, timesteps, **condition)
    per_sample = F.mse_loss(prediction.float(), target.float(), reduction="none").mean(
        dim=tuple(range(1, clean.ndim))
    )
    weights = snr_weights(snr(scheduler, timesteps), snr_weighting, snr_gamma, prediction_type)
    return {"loss": (per_sample * weights).mean()}


def flow_shift(scheduler: Any) -> float | None:
    """The shift of a flow-matching scheduler's sigmas (``shift * s / (1 + (shift - 1) * s)``:
    SD3 samples with 3, so more of its steps are spent near noise); None for a DDPM one."""
    config = scheduler.config
    if config.get("prediction_type") == FLOW:  # emu's: DPM-Solver++ on flow sigmas
        return float(config.get("flow_shift", 1.0))
    if type(scheduler).__name__ == "FlowMatchEulerDiscreteScheduler":
        # Flux shifts by the image's size when it samples and trains unshifted
        return 1.0 if config.get("use_dynamic_shifting") else float(config.get("shift", 1.0))
    return None


def flow_loss(
    denoise: Any,
    clean: torch.Tensor,
    noise: torch.Tensor,
    scheduler: Any,
    generator: torch.Generator,
    shift: float = 1.0,
    **condition: Any,
) -> dict[str, torch.Tensor]:
    """Rectified flow: ``noisy = (1 - sigma) * clean + sigma * noise``, the target the velocity
    ``noise - clean``, and the model told the time ``sigma * num_train_timesteps`` (the
    timesteps diffusers' flow sigmas give at sampling). Sigma is drawn logit-normal, as SD3
    trains: ``sigmoid(N(0, 1))``, so the middle of the path, where the image is decided, gets
    most of the steps; then shifted as the model's sampler shifts it (:func:`flow_shift`), as
    diffusers' ``train_dreambooth_sd3.py`` does by reading its scheduler's sigmas. A noise
    offset is part of ``noise``, so the velocity carries it."""
    batch = clean.shape[0]
    draw = torch.randn(batch, generator=generator, device=generator.device)
    sigmas = torch.sigmoid(draw)
    sigmas = (shift * sigmas / (1 + (shift - 1) * sigmas)).to(clean.device, clean.dtype)
    shaped = sigmas.view(-1, *([1] * (clean.ndim - 1)))
    noisy = (1 - shaped) * clean + shaped * noise
    prediction = denoise(noisy, sigmas * scheduler.config.num_train_timesteps, **condition)
    loss = F.mse_loss(prediction.float(), (noise - clean).float())
    return {"loss": loss}


class TextConditionedDenoising(nn.Module):
    """``forward(batch) -> loss`` for a UNet2DConditionModel denoising ``batch[key]`` given the
    text encoder's states for ``batch["input_ids"]``, or, with no ``text_encoder`` (a frozen one
    that ``encode`` ran: :func:`emu_cli.kit.text.text_inputs`), ``batch["states"]``: the
    denoiser stage of every diffusion backend, on latents or on pixels. A subclass may override
    :meth:`text_conditioning`,
    :meth:`condition` and :meth:`denoise` to give the UNet more inputs (a second text encoder's
    pooled embedding, a super-resolution model's low-resolution image)."""

    def __init__(
        self,
        unet: nn.Module,
        text_encoder: nn.Module | None,
        scheduler: Any,
        *,
        key: str,
        noise_offset: float,
        train_text_encoder: bool,
        snr_weighting: str = "none",
        snr_gamma: float = 5.0,
        text_encoder_lr_scale: float = 1.0,
    ):
        super().__init__()
        self.unet, self.text_encoder = unet, text_encoder
        self.learning_rate_scales = {"text_encoder": text_encoder_lr_scale}
        self.scheduler, self.key = scheduler, key
        self.noise_offset, self.train_text_encoder = noise_offset, train_text_encoder
        self.snr_weighting, self.snr_gamma = snr_weighting, snr_gamma

    def text_conditioning(self, batch: dict) -> dict[str, torch.Tensor]:
        """What :meth:`denoise` reads of the text: ``states``, the encoder's last states; with
        no encoder here, what ``encode`` gave of the text (``states``, and ``pooled`` for the
        models that also read a pooled embedding)."""
        if self.text_encoder is None:
            return {name: batch[name] for name in TEXT_OUTPUTS if name in batch}
        with torch.set_grad_enabled(self.train_text_encoder and torch.is_grad_enabled()):
            return {"states": self.text_encoder(batch["input_ids"])[0]}

    def condition(self, batch: dict) -> dict[str, Any]:
        """Inputs for :meth:`denoise` besides the noisy sample, its timesteps and the text."""
        return {}

    def denoise(self, noisy: torch.Tensor, timesteps: torch.Tensor, states: torch.Tensor):
        return self.unet(noisy, timesteps, encoder_hidden_states=states).sample

    def forward(self, batch: dict) -> dict[str, torch.Tensor]:
        return diffusion_loss(
            self.denoise,
            batch[self.key],
            self.scheduler,
            batch["generator"],
            noise_offset=self.noise_offset,
            snr_weighting=self.snr_weighting,
            snr_gamma=self.snr_gamma,
            **self.text_conditioning(batch),
            **self.condition(batch),
        )


def pipeline_components(pipeline_class: Any, path: Any, **left_out: Any) -> dict[str, Any]:
    """Every component of the pipeline in folder ``path``, each with the class its
    model_index.json names, safetensors only; the optional ones it lacks, and those named
    in ``left_out`` (``safety_checker=None``), not there."""
    pipe = pipeline_class.from_pretrained(path, use_safetensors=True, **left_out)
    return {name: part for name, part in pipe.components.items() if part is not None}


def pipeline_samples(
    pipe: Any, prompts: list[str], seeds: list[int], device: torch.device, **call: Any
) -> list[Any]:
    """A diffusers pipeline's images for ``prompts``, 16 at a time, image ``i`` from a generator
    seeded with ``seeds[i]`` alone, so it does not depend on the other prompts. A progress bar
    shows from 64 images on (generation, evaluation), not for a validation's few."""
    from tqdm.auto import tqdm

    images: list[Any] = []
    with (
        torch.no_grad(),
        tqdm(
            total=len(prompts), desc="sampling", unit="img", disable=len(prompts) < 64, leave=False
        ) as progress,
    ):
        for start in range(0, len(prompts), 16):
            chunk = slice(start, start + 16)
            generators = [torch.Generator(device).manual_seed(s) for s in seeds[chunk]]
            images += pipe(prompts[chunk], generator=generators, **call).images
            progress.update(len(generators))
    return images
