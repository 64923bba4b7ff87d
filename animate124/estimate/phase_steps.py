"""The step variants of each phase (which terms, frames and renders one step has) and their traces."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Optional

import torch
import torch.nn.functional as F

from animate124.estimate import arch
from animate124.estimate.render_model import OUTPUT_BYTES, RenderCost, field_params, render_cost
from animate124.estimate.steps import SDSTerm, StepEnv, _alphas, trace_term
from animate124.estimate.tracer import StepTracer

MODEL_BUILDERS = {
    "sd_vae": arch.sd_vae, "sd_unet": arch.sd_unet,
    "z123_vae": arch.sd_vae, "z123_unet": arch.zero123_unet, "z123_clip": arch.clip_vision,
    "z123_proj": arch.cc_projection,
    "ms_vae": arch.sd_vae, "ms_unet": arch.modelscope_unet,
    "svd_vae": arch.svd_vae, "svd_unet": arch.svd_unet, "svd_clip": arch.clip_vision,
    "cn_vae": arch.sd_vae, "cn_unet": arch.sd_unet, "cn": arch.controlnet_tile,
    "ti_vae": arch.sd_vae, "ti_unet": arch.sd_unet, "ti_text": lambda dt: arch.sd_text_encoder(torch.float32),
}
"""Model key → meta builder (the TI text encoder runs in fp32: only its one token row trains)."""

EXTRA_MODELS = {"zero123": ["z123_proj"]}
"""Models a term keeps resident without running them every step (Zero123's pose projection). The image encoders of
Zero123 and SVD are not: they move to the CPU once the reference embedding is computed
(guidance/base.py::TermInputs.offload_image_encoder)."""


@dataclass
class Variant:
    """One kind of training step of a phase and how often it occurs."""

    name: str
    share: float
    """Fraction of the phase's steps of this kind."""
    terms: list[SDSTerm] = field(default_factory=list)
    frames: int = 1
    size: int = 128
    normals: bool = True
    control_frames: int = 0
    """Frames the frozen model renders (no grad) as ControlNet control images."""
    ti: Optional[dict[str, Any]] = None
    """Textual-inversion step (batch, resolution) instead of a render step."""


def _term_models(terms: list[SDSTerm]) -> list[str]:
    keys: list[str] = []
    for t in terms:
        keys += [t.vae, t.unet] + ([t.control] if t.control else []) + EXTRA_MODELS.get(t.kind, [])
    return list(dict.fromkeys(keys))


def trace_render_step(env: StepEnv, v: Variant, models: list[str], fcfg: Any, spr: float, dynamic: bool,
                      field_n: int, frozen_n: int, checkpoint_frames: Optional[int] = None
                      ) -> tuple[StepTracer, RenderCost]:
    """Trace one render step (render → guidance terms → backward) with the field/renderer byte model.

    With ``checkpoint_frames`` = k < frames (``render.checkpoint_frames``), only the per-sample outputs stay saved
    through the step; backward recomputes k frames at a time (saved set + backward scratch of k frames) and the
    step pays one more render forward.
    """
    tr = env.new_tracer()
    rc = render_cost(fcfg, v.frames * v.size * v.size, spr, v.normals, dynamic)
    ck = checkpoint_frames is not None and v.frames > checkpoint_frames
    frac = checkpoint_frames / v.frames if checkpoint_frames is not None and ck else 1.0
    alphas = _alphas()
    env.prepare(models)
    with env.tracing():
        for key in models:
            env.load(key)
        weights = [env.block(field_n * 4, "weights"), env.block(frozen_n * 4, "weights")]
        optim = env.block(field_n * 8, "optimizer")
        with tr.component("render"):
            saved = env.block(rc.samples * OUTPUT_BYTES if ck else rc.saved_bytes, "activations")
            scratch = env.block(rc.transient_bytes * frac)
            clip = torch.rand(v.frames, 3, v.size, v.size, requires_grad=True)
            del scratch
        if v.control_frames:
            with tr.component("render/frozen"):
                frc = render_cost(fcfg, v.control_frames * v.size * v.size, spr, False, dynamic, grad=False)
                scratch = env.block(frc.transient_bytes)
                del scratch
        losses = [trace_term(env, term, clip, alphas) for term in v.terms]
        loss = torch.stack(losses).sum() if losses else (clip * 0).sum()
        with tr.component("backward"):
            grads = env.block(field_n * 4)
            loss.backward()
            recomputed = env.block(rc.saved_bytes * frac, "activations") if ck else None
            scratch = env.block(rc.transient_bytes * frac)
            del scratch, recomputed, saved, grads, loss, losses, clip
        del weights, optim
    if ck:  # one more forward render (the recomputation)
        fwd = render_cost(fcfg, v.frames * v.size * v.size, spr, v.normals, dynamic, grad=False)
        rc = dataclasses.replace(rc, hbm_bytes=rc.hbm_bytes + fwd.hbm_bytes, flops=rc.flops + fwd.flops)
    return tr, rc


def trace_ti_step(env: StepEnv, batch: int, resolution: int) -> StepTracer:
    """Trace one textual-inversion step: VAE encode (no grad) → CLIP text (fp32, grad to one row) → UNet fwd + bwd."""
    from animate124.guidance.base import vae_encode

    tr = env.new_tracer()
    alphas = _alphas()
    env.prepare(["ti_text", "ti_vae", "ti_unet"])
    with env.tracing():
        for key in ("ti_text", "ti_vae", "ti_unet"):
            env.load(key)
        row = torch.zeros(768, requires_grad=True)
        optim = env.block(768 * 8, "optimizer")
        pixels = torch.rand(batch, 3, resolution, resolution)
        with tr.component("ti/vae"), torch.no_grad():
            latents = env.run("ti_vae", vae_encode, pixels)
        noise = torch.randn_like(latents)
        t = torch.randint(0, 1000, (batch,))
        a = alphas[t].view(-1, 1, 1, 1)
        noisy = a.sqrt() * latents + (1 - a).sqrt() * noise
        ids = torch.randint(0, 49408, (batch, 77))
        with tr.component("ti/text"):
            hidden = env.run("ti_text", _text_with_row, ids, row)
        with tr.component("ti/unet"):
            pred = env.run("ti_unet", lambda m, x, tt, e: m(x, tt, encoder_hidden_states=e).sample,
                           noisy.to(env.dtype), t, hidden.to(env.dtype))
            loss = F.mse_loss(pred.float(), noise)
        loss.backward()
        del loss, pred, hidden, optim
    return tr


def _text_with_row(m: torch.nn.Module, ids: torch.Tensor, row: torch.Tensor) -> torch.Tensor:
    """CLIP text hidden states with the learned row injected where token 49407 occurs (TokenEmbedding's hook)."""
    hit = (ids == 49407).unsqueeze(-1)

    def inject(mod, inputs, out):
        return torch.where(hit, row.to(out.dtype), out)

    handle = m.get_input_embeddings().register_forward_hook(inject)
    try:
        return m(ids)[0]
    finally:
        handle.remove()


def field_sizes(fcfg: Any, dynamic: bool, frozen: bool) -> tuple[int, int]:
    """(trainable field parameters, frozen-copy parameters) of a phase."""
    n = field_params(fcfg, fcfg.keyframes if dynamic else 1)
    return n, (n if frozen else 0)
