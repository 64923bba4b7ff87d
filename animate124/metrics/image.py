"""Image metrics on tensors in [0, 1]: PSNR (the phases' reference-view and test-view score)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

MSE_FLOOR = 1e-12
"""MSE floor, so that identical images give a finite PSNR (120 dB)."""


def psnr_from_mse(mse: float) -> float:
    """Peak signal-to-noise ratio (dB) of images in [0, 1] from their mean squared error: −10·log10(MSE)."""
    return -10.0 * math.log10(max(float(mse), MSE_FLOOR))


def psnr_tensor(mse: Tensor) -> Tensor:
    """:func:`psnr_from_mse` on the tensor's device (a step statistic, read on the host only at log time)."""
    return -10.0 * torch.log10(mse.detach().float().clamp_min(MSE_FLOOR))


def psnr(pred: Tensor, target: Tensor) -> float:
    """Peak signal-to-noise ratio (dB) of two images (any equal shapes) in [0, 1], computed in fp32."""
    return psnr_from_mse(float(F.mse_loss(pred.float(), target.float())))
