"""One training step of each phase, written against a :class:`StepEnv` so that it runs on fake tensors (the estimate)
or on real ones (the CPU validation) through the same code.

The guidance part is traced with the real helpers the terms use (``guidance.video.encode_frames`` for every VAE
encode, ``guidance.sds.guided_sds`` for noise → ε̂ → loss) and the models' real forward passes; the renderer and the
field are the byte model of :mod:`animate124.estimate.render_model`, entered as placeholder blocks of the modelled
size (``StepEnv.block``) that live exactly as long as the real buffers would (until the end of backward).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Optional

import torch
from torch import Tensor, nn

from animate124.estimate.tracer import StepTracer
from animate124.guidance.base import resize_frames
from animate124.guidance.sds import guided_sds
from animate124.guidance.video import grad_frame_mask

Builder = Callable[[torch.dtype], nn.Module]


@dataclass
class StepEnv:
    """Models, tensors and the tracer of one traced step.

    Args:
        builders: model key → ``builder(dtype)`` (meta modules for the estimate, real tiny ones for validation).
        dtype: the guidance models' dtype.
        mode: a FakeTensorMode (estimate) or None (real tensors).
        round_to: allocation granularity of the tracer (512 = CUDA's caching allocator).
    """

    builders: dict[str, Builder]
    dtype: torch.dtype
    mode: Any = None
    round_to: int = 512
    modules: dict[str, nn.Module] = field(default_factory=dict)
    params: dict[str, dict[str, Tensor]] = field(default_factory=dict)
    tracer: StepTracer = field(init=False)

    def __post_init__(self) -> None:
        self.tracer = StepTracer(self.round_to)

    def new_tracer(self) -> StepTracer:
        self.tracer = StepTracer(self.round_to)
        return self.tracer

    def prepare(self, keys: list[str]) -> None:
        """Build the models ``keys`` (once per env; outside the fake mode, where module casts work)."""
        for key in keys:
            if key in self.modules:
                continue
            module = self.builders[key](self.dtype)
            self.modules[key] = module
            if self.mode is not None:
                from animate124.estimate.arch import fake_params

                self.params[key] = fake_params(module, self.mode)
            else:
                self.params[key] = dict(list(module.named_parameters()) + list(module.named_buffers()))

    def load(self, key: str) -> None:
        """Register the weights of ``key`` (built by :meth:`prepare`) with the current tracer."""
        self.tracer.register(list(self.params[key].values()), "weights")

    def run(self, key: str, fn: Callable[..., Any], *args: Any) -> Any:
        """``fn(model, *args)``; inside :meth:`tracing` the model holds its fake (or real) tensors."""
        return fn(self.modules[key], *args)

    def block(self, nbytes: float, category: str = "transient") -> Tensor:
        """A placeholder of ``nbytes`` (a modelled buffer), tracked under ``category``."""
        t = torch.empty(max(int(nbytes) // 4, 1), dtype=torch.float32)
        self.tracer.register(t, category)
        return t

    @contextlib.contextmanager
    def tracing(self) -> Iterator[StepTracer]:
        """Run the step's ops under the fake mode (if any) and the tracer."""
        outer = self.mode if self.mode is not None else contextlib.nullcontext()
        with contextlib.ExitStack() as stack:
            if self.mode is not None:
                # torch.func.functional_call's reparametrisation, held for the whole step: checkpointed blocks
                # recompute their forward during backward, after a per-call functional_call would have ended.
                from torch.nn.utils.stateless import _reparametrize_module

                for key, module in self.modules.items():
                    stack.enter_context(_reparametrize_module(module, self.params[key], tie_weights=False,
                                                              strict=False))
            stack.enter_context(outer)
            stack.enter_context(self.tracer)
            stack.enter_context(self.tracer.saved_tensors())
            yield self.tracer


# ------------------------------------------------------------------------------------------------ guidance terms


@dataclass
class SDSTerm:
    """What one SDS term needs to trace: its models, input size, text/image conditioning and CFG."""

    name: str
    vae: str
    unet: str
    size: tuple[int, int]
    emb: tuple[int, ...]
    """Shape of one branch's conditioning embedding, e.g. (1, 77, 768)."""
    kind: str = "unet2d"
    """unet2d | zero123 | unet3d | controlnet | svd."""
    cfg_scale: float = 7.5
    grad_frames: Optional[int] = None
    chunk: int = 16
    frames: Optional[list[int]] = None
    """Frames of the clip this term sees (None = all)."""
    control: Optional[str] = None
    """ControlNet model key (kind=controlnet)."""


def _alphas() -> Tensor:
    from animate124.guidance.models import sd_scheduler

    return sd_scheduler().alphas_cumprod.float()


def _predictor(env: StepEnv, term: SDSTerm, n: int, f: int, extra: dict[str, Tensor]):
    """(z_t, t) → (ε_u, ε_c) with one CFG-batched model call, for each model kind."""
    dt = env.dtype
    emb = torch.zeros(2 * (n if term.kind != "unet3d" else 1), *term.emb[1:], dtype=dt)

    def unet2d(m, x, t, e):
        return m(x, t, encoder_hidden_states=e).sample

    def predict(z_t: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        if term.kind == "unet3d":  # [1, C, F, h, w]
            x = torch.cat([z_t, z_t]).to(dt)
            eps = env.run(term.unet, unet2d, x, torch.cat([t[:1], t[:1]]), emb)
        elif term.kind == "svd":  # [1, F, 8, h, w]
            zf = z_t.permute(0, 2, 1, 3, 4)
            x = torch.cat([zf, zf], 0)
            x = torch.cat([x, torch.zeros_like(x)], 2).to(dt)
            ids = torch.zeros(2, 3, dtype=dt)
            eps = env.run(term.unet, lambda m, a, b, c, d: m(a, b, encoder_hidden_states=c, added_time_ids=d).sample,
                          x, torch.cat([t[:1], t[:1]]).to(dt), emb[:2], ids).permute(0, 2, 1, 3, 4)
        elif term.kind == "controlnet":
            x, tt = torch.cat([z_t, z_t]).to(dt), torch.cat([t, t])
            down, mid = env.run(term.control, lambda m, a, b, c, d: m(a, b, encoder_hidden_states=c, controlnet_cond=d,
                                                                    return_dict=False), x, tt, emb, extra["control"])
            eps = env.run(term.unet, lambda m, a, b, c, d, e: m(a, b, encoder_hidden_states=c,
                                                               down_block_additional_residuals=d,
                                                               mid_block_additional_residual=e).sample,
                          x, tt, emb, down, mid)
        else:
            x = torch.cat([z_t, z_t])
            if term.kind == "zero123":
                x = torch.cat([x, extra["concat"].expand(2 * n, -1, -1, -1)], 1)
            eps = env.run(term.unet, unet2d, x.to(dt), torch.cat([t, t]), emb)
        eps_u, eps_c = eps.float().chunk(2)
        return eps_u, eps_c

    return predict


def trace_term(env: StepEnv, term: SDSTerm, clip: Tensor, alphas: Tensor) -> Tensor:
    """SDS loss of ``clip`` [F, 3, H, W] (with grad) for ``term``: resize → VAE encode → guided_sds."""
    frames = clip if term.frames is None else clip[term.frames]
    n = frames.shape[0]
    tr = env.tracer
    with tr.component(f"{term.name}/vae"):
        x = resize_frames(frames, term.size)
        keep = _grad_frames(n, term.grad_frames)
        z = env.run(term.vae, lambda m, a: encode_like_terms(m, a, keep, term.chunk), x)
    extra: dict[str, Tensor] = {}
    if term.kind == "zero123":
        extra["concat"] = torch.zeros(1, *z.shape[1:], dtype=torch.float32)
    if term.kind == "controlnet":
        extra["control"] = torch.zeros(2 * n, 3, *term.size, dtype=env.dtype)
    if term.kind in ("unet3d", "svd"):
        z = z.reshape(1, n, *z.shape[1:]).permute(0, 2, 1, 3, 4)
    b = z.shape[0]
    with tr.component(f"{term.name}/unet"):
        t = torch.randint(20, 980, (b,))
        res = guided_sds(z, alphas, t, _predictor(env, term, b, n, extra), term.cfg_scale,
                         _weighting(), batch_size=1)
    return res.loss


def _grad_frames(n: int, k: Optional[int]) -> list[bool]:
    """``guidance.video.grad_frame_mask`` (evenly spaced picks), computed on real tensors."""
    from torch._subclasses.fake_tensor import unset_fake_temporarily

    with unset_fake_temporarily():
        return [bool(b) for b in grad_frame_mask(n, k, False, None).tolist()]


def encode_like_terms(vae: nn.Module, frames: Tensor, keep: list[bool], chunk: int) -> Tensor:
    """``guidance.video.encode_frames`` with the frame mask as a Python list (its ``nonzero`` is data dependent under
    fake tensors): frames with gradients first, ``chunk`` frames per VAE call, the others under no_grad."""
    from animate124.guidance.base import vae_encode

    out: list[Optional[Tensor]] = [None] * frames.shape[0]
    chunk = max(1, int(chunk))
    for keep_grad in (True, False):
        idx = [i for i, k in enumerate(keep) if k == keep_grad]
        for i in range(0, len(idx), chunk):
            sel = idx[i: i + chunk]
            with torch.set_grad_enabled(keep_grad and torch.is_grad_enabled()):
                z = vae_encode(vae, frames[sel], sample=True, scale=True)
            for j, n in enumerate(sel):
                out[n] = z[j]
    return torch.stack(out, dim=0)  # type: ignore[arg-type]


def _weighting():
    from animate124.config.guidance import Weighting

    return Weighting.one_minus_alpha
