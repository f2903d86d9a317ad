"""The kit: helpers that backends share, public for third-party backends too (docs/plugins.md).

- :mod:`emu_cli.kit.diffusion`: a text-conditioned denoising loss (epsilon or v, min-SNR, noise
  offset), scheduler configs, classifier-free guidance through diffusers pipelines.
- :mod:`emu_cli.kit.text`: small text encoders trained from scratch or loaded pretrained, the
  offline CLIP tokenizer, token ids.
- :mod:`emu_cli.kit.reconstruction`: PSNR, a patch discriminator and its adversarial losses,
  tensors to images.
"""
