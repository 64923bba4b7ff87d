"""The depth ControlNet of the keyframe pass: tiny / random builders, its hub layout, and loading.

``lllyasviel/control_v11f1p_sd15_depth`` is a flat diffusers repo (no subfolders): ``config.json`` and the weights as
``diffusion_pytorch_model.{bin,safetensors}`` plus ``.fp16.`` variants (HF file listing of revision 539f991, see
:data:`DEPTH_HUB_FILES`). Every model goes through ``guidance.models.load`` (pretrained | tiny | random).
"""

from __future__ import annotations

from typing import Optional, Union

import torch
from torch import nn

from animate124.config.schema import ModelsConfig
from animate124.guidance.models import load

DEPTH_MODEL = "lllyasviel/control_v11f1p_sd15_depth"
DEPTH_HUB_FILES = (
    "config.json",
    "diffusion_pytorch_model.bin",
    "diffusion_pytorch_model.fp16.bin",
    "diffusion_pytorch_model.fp16.safetensors",
    "diffusion_pytorch_model.safetensors",
)
"""Model files of the depth ControlNet repo (flat layout; README, images/ and control_net_depth.py omitted)."""


def tiny_depth_controlnet() -> nn.Module:
    """Tiny random depth ControlNet. Every ControlNet-1.1 for SD-1.5 (depth, tile, ...) has the same architecture,
    so this is the refine phase's tiny tile builder (``guidance.controlnet.tiny_controlnet``: mirrors the tiny UNet,
    conditioning embedding ×8, small random zero-convs so the control image reaches the UNet)."""
    from animate124.guidance.controlnet import tiny_controlnet

    return tiny_controlnet()


def random_depth_controlnet() -> nn.Module:
    """ControlNet v1.1 for SD-1.5, full-size architecture (cond embedding 16-32-96-256), random weights."""
    from animate124.guidance.controlnet import random_controlnet

    return random_controlnet()


def load_depth_controlnet(spec: str, models_cfg: Optional[ModelsConfig], device: Union[str, torch.device],
                          dtype: Union[str, torch.dtype] = "auto") -> nn.Module:
    """The depth ControlNet (flat layout) through the one loading path."""
    from diffusers import ControlNetModel

    return load(ControlNetModel, spec, None, dtype, models_cfg, tiny_depth_controlnet, random_depth_controlnet, device)


def load_tile_controlnet(spec: str, models_cfg: Optional[ModelsConfig], device: Union[str, torch.device],
                         dtype: Union[str, torch.dtype] = "auto") -> nn.Module:
    """The tile ControlNet (same builders as the refine phase's, guidance/controlnet.py)."""
    from diffusers import ControlNetModel

    from animate124.guidance.controlnet import random_controlnet, tiny_controlnet

    return load(ControlNetModel, spec, None, dtype, models_cfg, tiny_controlnet, random_controlnet, device)
