"""Full-size guidance architectures on the meta device (no weights allocated, nothing downloaded).

Every builder reuses the ``models=random`` builder of the guidance module that owns the model, called under
``torch.device("meta")``, then casts to the run's model dtype. The configs those builders write in code come from the
real repositories' ``config.json`` files:

| model | builder | source of the config |
|---|---|---|
| SD-1.5 UNet (860 M) | ``guidance.models.random_unet`` | huggingface.co/stable-diffusion-v1-5/stable-diffusion-v1-5, unet/config.json |
| SD-1.5 VAE (84 M) | ``guidance.models.random_vae`` | same repo, vae/config.json (also ModelScope's and Zero123-XL's VAE) |
| SD-1.5 text encoder, CLIP ViT-L/14 text (123 M) | ``guidance.models.random_text_encoder`` | same repo, text_encoder/config.json |
| Zero123-XL UNet (8 input channels) | ``random_unet(in_channels=8)`` | huggingface.co/bennyguo/zero123-xl-diffusers, unet/config.json |
| Zero123-XL CLIP ViT-L/14 vision + projection | ``guidance.models.random_image_encoder`` | same repo, image_encoder/config.json |
| Zero123 cc_projection Linear(772 → 768) | ``nn.Linear(772, 768)`` | same repo, cc_projection |
| ModelScope UNet3D (1.4 B) | ``guidance.video.modelscope_unet3d`` | huggingface.co/damo-vilab/text-to-video-ms-1.7b, unet/config.json |
| ModelScope text encoder, OpenCLIP ViT-H/14 text | ``guidance.video.random_video_text_encoder`` | same repo, text_encoder/config.json |
| SVD UNet (1.5 B), VAE, ViT-H/14 | ``guidance.svd_models.full_*`` | huggingface.co/stabilityai/stable-video-diffusion-img2vid |
| ControlNet v1.1 Tile (361 M) | ``guidance.controlnet.random_controlnet`` | huggingface.co/lllyasviel/control_v11f1e_sd15_tile |

:func:`fake_params` turns a meta module's parameters and buffers into fake tensors (on CPU, of the module's dtype)
for ``torch.func.functional_call``: initialising random weights under a fake CUDA mode fails, and backward over fake
CUDA tensors fails (issue 12), so the trace runs on fake CPU tensors of the GPU dtypes.
"""

from __future__ import annotations

import functools
from typing import Callable

import torch
from torch import Tensor, nn


def _on_meta(builder: Callable[[], nn.Module], dtype: torch.dtype) -> nn.Module:
    from diffusers.utils import logging as dlog

    old = dlog.get_verbosity()
    dlog.set_verbosity_error()  # diffusers warns on every .to(dtype) of a model "with modules to keep in fp32": none
    try:
        with torch.device("meta"):
            module = builder()
        module = module.to(dtype=dtype)
    finally:
        dlog.set_verbosity(old)
    module.requires_grad_(False)
    return module.eval()


def sd_unet(dtype: torch.dtype) -> nn.Module:
    from animate124.guidance.models import random_unet

    return _on_meta(random_unet, dtype)


def zero123_unet(dtype: torch.dtype) -> nn.Module:
    from animate124.guidance.models import random_unet

    return _on_meta(functools.partial(random_unet, in_channels=8), dtype)


def sd_vae(dtype: torch.dtype) -> nn.Module:
    from animate124.guidance.models import random_vae

    return _on_meta(random_vae, dtype)


def sd_text_encoder(dtype: torch.dtype) -> nn.Module:
    from animate124.guidance.models import random_text_encoder

    return _on_meta(random_text_encoder, dtype)


def clip_vision(dtype: torch.dtype) -> nn.Module:
    from animate124.guidance.models import random_image_encoder

    return _on_meta(random_image_encoder, dtype)


def cc_projection(dtype: torch.dtype) -> nn.Module:
    return _on_meta(lambda: nn.Linear(772, 768), dtype)


def modelscope_unet(dtype: torch.dtype) -> nn.Module:
    from animate124.guidance.video import modelscope_unet3d

    return _on_meta(modelscope_unet3d, dtype)


def modelscope_text_encoder(dtype: torch.dtype) -> nn.Module:
    from animate124.guidance.video import random_video_text_encoder

    return _on_meta(random_video_text_encoder, dtype)


def svd_unet(dtype: torch.dtype) -> nn.Module:
    from animate124.guidance.svd_models import full_unet

    return _on_meta(full_unet, dtype)


def svd_vae(dtype: torch.dtype) -> nn.Module:
    from animate124.guidance.svd_models import full_vae

    return _on_meta(full_vae, dtype)


def controlnet_tile(dtype: torch.dtype) -> nn.Module:
    from animate124.guidance.controlnet import random_controlnet

    return _on_meta(random_controlnet, dtype)


def param_bytes(module: nn.Module) -> int:
    """Bytes of the parameters and buffers of ``module`` (meta or real)."""
    tensors = list(module.parameters()) + list(module.buffers())
    return sum(t.numel() * t.element_size() for t in tensors)


def fake_params(module: nn.Module, mode: "torch._subclasses.FakeTensorMode", device: str = "cpu",
                requires_grad: bool = False) -> dict[str, Tensor]:
    """Fake tensors (``device``, same dtype and shape) for every parameter and buffer of a meta ``module``."""
    out: dict[str, Tensor] = {}
    with mode:
        for name, t in list(module.named_parameters()) + list(module.named_buffers()):
            fake = torch.empty(t.shape, dtype=t.dtype, device=device)
            if requires_grad and t.is_floating_point() and isinstance(t, nn.Parameter):
                fake.requires_grad_(True)
            out[name] = fake
    return out
