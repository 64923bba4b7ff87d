"""``phase=textual_inversion``: learn the subject's SD-1.5 token from the input picture (spec §3).

Writes ``<run_dir>/textual_inversion/learned_embeds.safetensors`` and the diffusers ``learned_embeds.bin``
(``{token: tensor[D]}``); the refine phase's ControlNet term reads them (:func:`find_learned_embeds`).

A case that ships ``learned_embeds.bin`` of the right width (768 for SD-1.5) needs no training: the phase copies it and
finishes with 0 steps. With ``models=tiny`` the text encoder is 32-d, so a 768-d benchmark token cannot be used and the
phase trains a tiny one instead (logged).

Token name: ``phase.placeholder_token`` or ``_<case name with _>_`` (``_panda_dance_``, the benchmark's names) or
``_<image stem>_``; initializer: ``phase.initializer_token`` or the subject noun of the caption ("panda").
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch
from torch import nn

from animate124.data.case import Case, find_subject, load_case
from animate124.data.reference import open_image
from animate124.errors import InputError
from animate124.guidance.models import load, load_sd_components, random_text_encoder, tiny_text_encoder
from animate124.guidance.textual_inversion import (
    TextualInversion,
    load_learned_embeds,
    save_learned_embeds,
)
from animate124.io.run_dir import load_inputs, phase_dirs
from animate124.phases.base import Phase, StepOutput

log = logging.getLogger(__name__)

EMBEDS_FILE = "learned_embeds.safetensors"
EMBEDS_BIN = "learned_embeds.bin"


def learned_embeds_path(run_dir: str | Path) -> Path:
    """``<run_dir>/textual_inversion/learned_embeds.safetensors``."""
    return phase_dirs(run_dir, "textual_inversion").root / EMBEDS_FILE


def find_learned_embeds(explicit: Optional[str], run_dir: str | Path, case: Optional[Case]) -> Optional[Path]:
    """The token file for later phases: ``explicit`` → this run's TI output → the case's file → None."""
    if explicit:
        if not Path(explicit).is_file():
            raise InputError(f"learned embeddings {explicit} not found; fix guidance.controlnet.learned_embeds")
        return Path(explicit)
    own = learned_embeds_path(run_dir)
    if own.is_file():
        return own
    return case.learned_embeds if case is not None and case.learned_embeds is not None else None


def default_token(case: Optional[Case], image: Optional[str]) -> str:
    """``_panda_dance_`` for case panda-dance; ``_<image stem>_`` (or its folder's name for image/rgba files)."""
    if case is not None:
        stem = case.name
    elif image:
        p = Path(image)
        stem = p.parent.name if p.stem.lower() in ("image", "rgba", "input") and p.parent.name else p.stem
    else:
        stem = "subject"
    return "_" + re.sub(r"[^A-Za-z0-9]+", "_", stem).strip("_").lower() + "_"


def load_rgb(path: str | Path) -> torch.Tensor:
    """[3, H, W] in [0, 1]; transparency composited on white (TI trains on the raw picture, spec §3)."""
    im = open_image(path).convert("RGBA")
    arr = torch.from_numpy(np.asarray(im, dtype=np.float32) / 255.0).permute(2, 0, 1)
    return arr[:3] * arr[3:] + (1.0 - arr[3:])


class _Holder(nn.Module):
    """Checkpoint container for the learned row (keeps model.safetensors at one [D] tensor)."""

    def __init__(self, row: nn.Parameter) -> None:
        super().__init__()
        self.row = row


class TextualInversionPhase(Phase):
    """Trains one token embedding; see the module docstring."""

    name = "textual_inversion"

    def build(self) -> None:
        cfg, p = self.cfg, self.pcfg
        self.case = load_case(cfg.case)
        inputs = load_inputs(self.run_dir)
        image = str(self.case.raw_image) if self.case else (cfg.image or inputs.get("image"))
        if not image:
            raise InputError("phase=textual_inversion needs an input picture; pass image=<path> or case=<name>")
        prompt = self.case.caption if self.case else (cfg.prompt or inputs.get("prompt") or "")
        self.token = p.placeholder_token or default_token(self.case, image)
        subject = self.case.subject if self.case else (find_subject(prompt) if prompt.strip() else "object")
        self.initializer = p.initializer_token or subject.split()[-1]
        self.given: Optional[dict[str, torch.Tensor]] = None
        self.ti: Optional[TextualInversion] = None
        if self.case is not None and self.case.learned_embeds is not None:
            embeds = load_learned_embeds(self.case.learned_embeds)
            width = self._text_width()
            if next(iter(embeds.values())).numel() == width:
                self.given = embeds
                log.info("textual_inversion: using %s (token %s); nothing to train", self.case.learned_embeds,
                         next(iter(embeds)))
                return
            log.warning("textual_inversion: %s is %d-d but this text encoder is %d-d (models=%s); learning a new token",
                        self.case.learned_embeds, next(iter(embeds.values())).numel(), width,
                        getattr(cfg.models.kind, "value", cfg.models.kind))
        sd = load_sd_components(cfg.guidance.sd.model, cfg.models, self.device)
        self.ti = TextualInversion(sd.tokenizer, sd.text_encoder, sd.vae, sd.unet, sd.scheduler, load_rgb(image),
                                   self.token, self.initializer, resolution=p.resolution, batch_size=p.batch_size,
                                   lr=p.lr, augment=p.augment, seed=cfg.seed).to(self.device)
        self.optimizer = self.ti.optimizer

    def _text_width(self) -> int:
        from transformers import CLIPTextModel

        enc = load(CLIPTextModel, self.cfg.guidance.sd.model, "text_encoder", "float32", self.cfg.models,
                   tiny_text_encoder, random_text_encoder)
        return int(enc.get_input_embeddings().weight.shape[1])

    @property
    def max_steps(self) -> int:
        return 0 if self.given is not None else int(self.pcfg.max_steps)

    def train_step(self, step: int) -> StepOutput:
        assert self.ti is not None
        loss = self.ti.loss(self.ti.batch())
        return StepOutput(loss, {"ti_norm": self.ti.token_embedding.row.detach().norm()})

    def after_step(self, step: int) -> None:
        if self.ti is not None:
            self.ti.token_embedding.sync()

    def modules_to_save(self) -> dict[str, nn.Module]:
        return {"token": _Holder(self.ti.token_embedding.row)} if self.ti is not None else {}

    def load_modules(self, model_state: dict[str, torch.Tensor]) -> None:
        if self.ti is not None and "token.row" in model_state:
            self.ti.set_embedding(model_state["token.row"].float())

    def extra_state(self) -> dict[str, Any]:
        return {"token": self.token}

    def final(self, step: int) -> dict[str, float]:
        embeds = self.given if self.given is not None else {self.token: self.ti.embedding()}  # type: ignore[union-attr]
        save_learned_embeds(self.dirs.root / EMBEDS_FILE, embeds)
        save_learned_embeds(self.dirs.root / EMBEDS_BIN, embeds)
        value = next(iter(embeds.values()))
        return {"embedding_norm": float(value.norm()), "embedding_dim": float(value.numel()),
                "trained": float(self.given is None)}


PHASE = TextualInversionPhase
