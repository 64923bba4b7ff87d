"""The one table of guidance terms: config name → (config class, term class, where the phases use it).

Every term is built the same way, ``Term(cfg, inputs)`` (guidance/base.py::TermInputs), so phases never name a
term class: they ask :func:`build_terms` for the enabled terms of one :class:`TermUse`.

Example:
    >>> inputs = TermInputs(device="cuda", models_cfg=cfg.models, prompt="a panda", reference=ref)
    >>> terms = build_terms(cfg.guidance, TermUse.every_frame, inputs)   # [sd, zero123] when enabled
    >>> term = build_term(cfg.guidance.zero123, inputs)

Adding a term: its module (a ``GuidanceTerm`` with ``__init__(cfg, inputs)``), its config in config/guidance.py
(a dataclass and a field of that name in ``GuidanceConfig``) and one row here.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Any, Callable, Optional, Sequence, Union

from animate124.config.guidance import (
    ControlNetGuidanceConfig,
    GuidanceConfig,
    ImageVideoGuidanceConfig,
    SDSConfig,
    StableDiffusionGuidanceConfig,
    VideoGuidanceConfig,
    VideoPriorKind,
    Zero123GuidanceConfig,
)
from animate124.errors import ConfigError
from animate124.guidance.base import GuidanceTerm, TermInputs
from animate124.guidance.controlnet import ControlNetTileGuidance
from animate124.guidance.image_video import ImageVideoGuidance
from animate124.guidance.stable_diffusion import StableDiffusionGuidance
from animate124.guidance.video import VideoSDS
from animate124.guidance.zero123 import Zero123Guidance


class TermUse(str, Enum):
    """Where a phase applies a term."""

    every_frame = "every_frame"
    """The static phase: every SDS render."""
    clip = "clip"
    """The dynamic and refine phases: the video prior(s) of the clip, chosen by ``guidance.video.kind``."""
    start_frame = "start_frame"
    """The dynamic and refine phases: frame 0 of clips that start at τ = 0 (``phase.zero123_on_start``)."""


@dataclass(frozen=True)
class TermSpec:
    """One row of :data:`TERMS`."""

    config: type[SDSConfig]
    """The term's config class (the type of ``GuidanceConfig.<name>``)."""
    term: Callable[[Any, TermInputs], GuidanceTerm]
    """The term class, built as ``term(cfg, inputs)``."""
    uses: tuple[TermUse, ...]
    """Where the phases apply it."""
    prior: Optional[VideoPriorKind] = None
    """For :attr:`TermUse.clip` terms: the ``guidance.video.kind`` that selects it (``both`` selects every one)."""


TERMS: dict[str, TermSpec] = {
    "sd": TermSpec(StableDiffusionGuidanceConfig, StableDiffusionGuidance, (TermUse.every_frame,)),
    "zero123": TermSpec(Zero123GuidanceConfig, Zero123Guidance, (TermUse.every_frame, TermUse.start_frame)),
    "video": TermSpec(VideoGuidanceConfig, VideoSDS, (TermUse.clip,), VideoPriorKind.text),
    "image_video": TermSpec(ImageVideoGuidanceConfig, ImageVideoGuidance, (TermUse.clip,), VideoPriorKind.image),
    "controlnet": TermSpec(ControlNetGuidanceConfig, ControlNetTileGuidance, ()),
}
"""Config name (the field of ``GuidanceConfig``) → its row, in the order phases apply the terms. The refine phase
builds the ControlNet term itself (``build_term``): it renders the frozen model at the term's ``frame_indices``."""


def _spec_of(cfg: SDSConfig) -> TermSpec:
    for spec in TERMS.values():
        if type(cfg) is spec.config:
            return spec
    raise ConfigError(f"no guidance term is configured by {type(cfg).__name__}; known: "
                      f"{', '.join(s.config.__name__ for s in TERMS.values())} (guidance/factory.py::TERMS)")


def build_term(cfg: SDSConfig, inputs: TermInputs) -> GuidanceTerm:
    """The term configured by ``cfg`` (its class is the :data:`TERMS` row of ``type(cfg)``), enabled or not."""
    return _spec_of(cfg).term(cfg, inputs)


def term_names(guidance_cfg: GuidanceConfig, use: TermUse) -> list[str]:
    """The names of the terms applied at ``use``, in table order (clip terms filtered by ``guidance.video.kind``)."""
    names = [name for name, spec in TERMS.items() if use in spec.uses]
    if use == TermUse.clip:
        kind = VideoPriorKind(guidance_cfg.video.kind)
        names = [n for n in names if kind == VideoPriorKind.both or TERMS[n].prior == kind]
    return names


def build_terms(guidance_cfg: GuidanceConfig, use: Union[TermUse, Sequence[str]],
                inputs: TermInputs) -> list[GuidanceTerm]:
    """The enabled terms of ``use`` (a :class:`TermUse`, or config names), built in that order.

    Raises:
        ConfigError: an unknown term name.
    """
    names = term_names(guidance_cfg, use) if isinstance(use, TermUse) else list(use)
    unknown = [n for n in names if n not in TERMS]
    if unknown:
        raise ConfigError(f"unknown guidance term(s) {unknown}; known: {', '.join(TERMS)} (guidance/factory.py)")
    terms: list[GuidanceTerm] = []
    for name in names:
        cfg = getattr(guidance_cfg, name)
        if cfg.enabled:
            terms.append(build_term(cfg, inputs))
    return terms


__all__ = ["TERMS", "TermSpec", "TermUse", "build_term", "build_terms", "term_names"]
