"""``PixelDiffusionPipeline``: text to RGB pixels with a UNet, then optionally a super-resolution
UNet conditioned on the upsampled base image (Imagen's cascade), both with classifier-free
guidance. Dynamic thresholding is the scheduler's (``thresholding=True`` in its config).

    from emu_pixel_diffusion import PixelDiffusionPipeline
    pipe = PixelDiffusionPipeline.from_pretrained("runs/pixel/pre")
    seed = torch.Generator().manual_seed(0)
    images = pipe(["a red star on a sunset background"], generator=[seed]).images
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from diffusers import DiffusionPipeline, ImagePipelineOutput
from PIL import Image


def upsample(images: torch.Tensor, factor: int) -> torch.Tensor:
    return F.interpolate(images, scale_factor=factor, mode="bicubic", align_corners=False)


def low_resolution_view(images: torch.Tensor, factor: int) -> torch.Tensor:
    """What the super-resolution model is given: the image at 1/factor, brought back up."""
    return upsample(F.avg_pool2d(images, factor), factor).clamp(-1, 1)


def noise_augment(
    images: torch.Tensor, noise: torch.Tensor, levels: torch.Tensor, alphas_cumprod: torch.Tensor
) -> torch.Tensor:
    """Imagen's noise-conditioning augmentation: the low-resolution input diffused to ``levels``
    (training timesteps), so the model learns to repair what the base model gets wrong."""
    alphas = alphas_cumprod.to(images.device)[levels].view(-1, 1, 1, 1).to(images.dtype)
    return alphas.sqrt() * images + (1 - alphas).sqrt() * noise


def to_pil(images: torch.Tensor) -> list[Image.Image]:
    arrays = ((images.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1)
    return [Image.fromarray(a.cpu().numpy()) for a in arrays]


class PixelDiffusionPipeline(DiffusionPipeline):
    model_cpu_offload_seq = "text_encoder->unet->sr_unet"
    _optional_components = ["sr_unet", "sr_scheduler"]

    def __init__(self, unet, text_encoder, tokenizer, scheduler, sr_unet=None, sr_scheduler=None):
        super().__init__()
        self.register_modules(
            unet=unet,
            text_encoder=text_encoder,
            tokenizer=tokenizer,
            scheduler=scheduler,
            sr_unet=sr_unet,
            sr_scheduler=sr_scheduler,
        )

    @property
    def superres_factor(self) -> int:
        if self.sr_unet is None:
            return 1
        return self.sr_unet.config.sample_size // self.unet.config.sample_size

    def encode_prompts(self, prompts: list[str]) -> torch.Tensor:
        """Text states for the prompts followed by those of the empty prompt (unconditional)."""
        ids = self.tokenizer(
            [*prompts, ""],
            padding="max_length",
            max_length=self.tokenizer.model_max_length,
            truncation=True,
            return_tensors="pt",
        ).input_ids.to(self.unet.device)
        return self.text_encoder(ids)[0]

    def _denoise(
        self,
        unet,
        scheduler,
        noise: torch.Tensor,
        states: torch.Tensor,
        guidance: float,
        steps: int,
        low: torch.Tensor | None = None,
        levels: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The guided sampling loop both models share; ``low`` and ``levels`` condition the
        super-resolution model on its (augmented) low-resolution input."""
        count = noise.shape[0]
        conditional, unconditional = states[:-1], states[-1:].expand(count, -1, -1)
        doubled_states = torch.cat([conditional, unconditional])
        scheduler = copy.deepcopy(scheduler)  # multistep solvers keep per-call state
        scheduler.set_timesteps(steps, device=noise.device)
        sample = noise * scheduler.init_noise_sigma
        for t in scheduler.timesteps:
            inputs = scheduler.scale_model_input(torch.cat([sample, sample]), t)
            extra = {}
            if low is not None:
                inputs = torch.cat([inputs, torch.cat([low, low])], dim=1)
                extra["class_labels"] = torch.cat([levels, levels])
            prediction = unet(
                inputs, t, encoder_hidden_states=doubled_states, **extra
            ).sample.chunk(2)
            guided = prediction[1] + guidance * (prediction[0] - prediction[1])
            sample = scheduler.step(guided, t, sample).prev_sample
        return sample.clamp(-1, 1)

    @torch.no_grad()
    def __call__(
        self,
        prompt: str | list[str],
        num_inference_steps: int = 25,
        guidance_scale: float = 2.0,  # as the backend's default_guidance; backend.py says why
        generator: torch.Generator | list[torch.Generator] | None = None,
        output_type: str = "pil",
        upscale: bool = True,
        sr_num_inference_steps: int | None = None,
        sr_noise_level: int = 50,
    ) -> ImagePipelineOutput:
        """Image ``i`` depends only on ``prompt[i]`` and ``generator[i]`` (one generator per
        prompt; a single one is shared in order). ``upscale=False`` returns the base images."""
        prompts = [prompt] if isinstance(prompt, str) else list(prompt)
        generators = (
            generator
            if isinstance(generator, list)
            else [generator or torch.Generator().manual_seed(0)] * len(prompts)
        )
        if len(generators) != len(prompts):
            raise ValueError(f"{len(prompts)} prompts but {len(generators)} generators")
        device = self.unet.device
        states = self.encode_prompts(prompts)

        def noise_like(channels: int, size: int) -> torch.Tensor:
            shape = (channels, size, size)
            return torch.stack(
                [torch.randn(shape, generator=g, device=g.device) for g in generators]
            ).to(device)

        size = self.unet.config.sample_size
        images = self._denoise(
            self.unet,
            self.scheduler,
            noise_like(self.unet.config.out_channels, size),
            states,
            guidance_scale,
            num_inference_steps,
        )
        factor = self.superres_factor
        if upscale and factor > 1:
            levels = torch.full((len(prompts),), sr_noise_level, device=device, dtype=torch.long)
            low = noise_augment(
                upsample(images, factor),
                noise_like(3, size * factor),
                levels,
                self.sr_scheduler.alphas_cumprod,
            )
            images = self._denoise(
                self.sr_unet,
                self.sr_scheduler,
                noise_like(self.sr_unet.config.out_channels, size * factor),
                states,
                guidance_scale,
                sr_num_inference_steps or num_inference_steps,
                low=low,
                levels=levels,
            )
        if output_type == "pt":
            return ImagePipelineOutput(images=images)
        return ImagePipelineOutput(images=to_pil(images))
