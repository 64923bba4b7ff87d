"""The guidance-term protocol (DESIGN.md §4): ``term(images, ctx) -> GuidanceOutput``.

A term owns frozen pretrained models (``requires_grad=False``, eval mode); gradients flow only into ``images``.
Every term is built the same way, ``Term(cfg, inputs)``: its config (``config/guidance.py``) and the
:class:`TermInputs` of the phase (device, models, prompt, reference image, seed, token file); the factory
(``guidance/factory.py``) picks the class from the config. Subclasses implement :meth:`GuidanceTerm.forward`.
Helpers here are shared by every term: :meth:`GuidanceTerm.freeze`, :func:`resize_frames`, :func:`vae_encode`,
:func:`resolve_device`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Protocol, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from animate124.config.schema import ModelsConfig
from animate124.errors import InputError
from animate124.types import GuidanceContext, GuidanceOutput


class ReferenceViewsLike(Protocol):
    """What a term reads of the reference at one size (``data.reference.ReferenceViews``)."""

    @property
    def rgb(self) -> Tensor:
        """[3, S, S] in [0, 1], composited on white."""
        ...


class ReferenceLike(Protocol):
    """A reference image a term can ask for at its own resolution (``data.reference.ReferenceImage``)."""

    def at(self, size: int) -> ReferenceViewsLike: ...


@dataclass(frozen=True, eq=False)
class TermInputs:
    """What guidance terms take from the phase that builds them (the same value for every term of a phase)."""

    device: Union[str, torch.device] = "cpu"
    """The run's device (a term's ``cfg.device`` overrides it)."""
    models_cfg: Optional[ModelsConfig] = None
    """pretrained | tiny | random and the cache dir (None = pretrained defaults)."""
    prompt: str = ""
    """The text of text-conditioned terms: the static prompt (static phase), the motion prompt (dynamic phase), the
    prompt with the learned token (refine's ControlNet term). Terms append their own ``prompt_suffix``."""
    reference: Optional[Union[Tensor, ReferenceLike]] = None
    """The reference image: a ``ReferenceImage``-like object (each term takes it at its own resolution), or an
    already sized ``[3, H, W]`` RGB tensor in [0, 1] on white, used as given."""
    seed: int = 0
    """Seed of a term's fixed draws (the SVD conditioning's noise augmentation)."""
    learned_embeds: Optional[Union[str, Path]] = None
    """Textual-inversion token file ({token: tensor}) of the ControlNet term; None = no token."""
    generator: Optional[torch.Generator] = None
    """RNG of the text-to-video term (timesteps, noise, VAE sample; None = the global RNG)."""
    keep_image_encoder: bool = False
    """Keep image encoders on the device after the reference embedding (True when more references follow: the
    rerender's one-per-keyframe conditioning); False moves them to the CPU (:meth:`offload_image_encoder`)."""

    def reference_rgb(self, term: str, size: int) -> Tensor:
        """The reference RGB for ``term`` at ``size``² (a tensor reference is returned as given).

        Raises:
            InputError: no reference image (a term conditioned on the input image cannot be built without one).
        """
        if self.reference is None:
            raise InputError(f"guidance term {term!r} is conditioned on the reference image, but none was given: "
                             f"pass image=<path> (or case=<name>), or set guidance.{term}.enabled=false")
        if isinstance(self.reference, Tensor):
            return self.reference
        return self.reference.at(size).rgb

    def offload_image_encoder(self, module: nn.Module) -> None:
        """Move an image encoder to the CPU once its reference embedding is computed (it is not run per step),
        unless ``keep_image_encoder`` (more references follow). Its weights and dtype are unchanged."""
        if not self.keep_image_encoder:
            module.to("cpu")


class GuidanceTerm(nn.Module):
    """Base class of all guidance terms.

    Call contract: ``term(images [B, F, 3, H, W] float in [0, 1], ctx: GuidanceContext) -> GuidanceOutput``.
    ``GuidanceOutput.loss`` is a scalar already multiplied by the term's λ; ``stats`` are floats keyed
    ``"<name>/<what>"``. Terms never call ``backward`` themselves.
    """

    name: str = "guidance"

    def __init__(self) -> None:
        super().__init__()
        self._dummy: Tensor
        self.register_buffer("_dummy", torch.empty(0), persistent=False)

    @property
    def device(self) -> torch.device:
        return self._dummy.device

    def forward(self, images: Tensor, ctx: GuidanceContext) -> GuidanceOutput:  # pragma: no cover - abstract
        raise NotImplementedError

    def freeze(self) -> "GuidanceTerm":
        """Put every submodule in eval mode without gradients (the pretrained models are never trained)."""
        for p in self.parameters():
            p.requires_grad_(False)
        self.eval()
        return self

    def train(self, mode: bool = True) -> "GuidanceTerm":
        """Frozen models stay in eval mode (dropout off) whatever the caller asks."""
        return super().train(False)


def check_images(images: Tensor) -> None:
    """Validate the ``[B, F, 3, H, W]`` boundary layout."""
    if images.dim() != 5 or images.shape[2] != 3:
        raise ValueError(f"guidance expects images [B, F, 3, H, W], got {tuple(images.shape)}")


def resize_frames(images: Tensor, size: Union[int, tuple[int, int]]) -> Tensor:
    """Bilinear resize of ``[N, 3, H, W]`` to ``size`` (no-op when equal), align_corners=False like the original."""
    hw = (size, size) if isinstance(size, int) else tuple(size)
    if tuple(images.shape[-2:]) == hw:
        return images
    return F.interpolate(images, size=hw, mode="bilinear", align_corners=False)


def vae_encode(vae: Any, images: Tensor, sample: bool = True, scale: bool = True,
               generator: Optional[torch.Generator] = None) -> Tensor:
    """Encode ``[N, 3, H, W]`` images in [0, 1] to latents with gradients through the encoder.

    Args:
        vae: diffusers ``AutoencoderKL``.
        images: [N, 3, H, W] in [0, 1] (mapped to [-1, 1] here).
        sample: posterior sample (True, the original's SDS input) or mode.
        scale: multiply by ``vae.config.scaling_factor`` (True for diffusion inputs; Zero123's concat latent is
            unscaled).
        generator: RNG of the posterior sample.

    Returns:
        [N, C, H/f, W/f] latents in fp32.
    """
    dtype = next(vae.parameters()).dtype
    x = (images * 2.0 - 1.0).to(dtype)
    dist = vae.encode(x).latent_dist
    z = dist.sample(generator) if sample else dist.mode()
    if scale:
        z = z * vae.config.scaling_factor
    return z.float()


CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
"""CLIP's pixel mean (OpenAI and OpenCLIP)."""
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
"""CLIP's pixel std."""


def clip_normalize(images: Tensor, size: int = 224, mode: str = "bicubic") -> Tensor:
    """[N, 3, H, W] in [0, 1] → CLIP pixel values [N, 3, size, size]: antialiased resize + mean/std, differentiable.

    transformers' ``CLIPImageProcessor`` falls back to a non-differentiable PIL path without torchvision, so the
    guidance terms normalise tensors here.
    """
    x = F.interpolate(images, size=(size, size), mode=mode, align_corners=False, antialias=True)
    mean = torch.tensor(CLIP_MEAN, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    std = torch.tensor(CLIP_STD, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    return (x.clamp(0.0, 1.0) - mean) / std


def resolve_device(device: Optional[str], default: Union[str, torch.device]) -> torch.device:
    """A term's device: its own ``device`` setting or the run's."""
    return torch.device(device) if device else torch.device(default)
