"""Trace a phase's step "on CUDA" without a GPU: real CPU tensors, fake CUDA tensors (issue 11).

Under :func:`fake_cuda`, every tensor created on or moved to a CUDA device is a
``torch._subclasses.fake_tensor.FakeTensor`` (shape, dtype and device, no data); CPU tensors stay real, so host-side
set-up (image files, checkpoints, generators, config tensors read with ``.tolist()``) runs as it does on a GPU
machine. An op that meets a CUDA tensor and a non-scalar CPU tensor raises ``FakeTensorDeviceMismatchError``, a host
read of a CUDA value (``.item()``, ``bool(t)``, a data-dependent shape) raises ``DataDependentOutputException``: the
two classes of bug that only a GPU run would otherwise show.

Needs a CUDA build of torch (the CPU-only build aborts the process on a convolution over a fake CUDA tensor), so the
tests using it carry the ``fake_cuda`` marker and skip elsewhere; ``scripts/ci/cuda_venv.sh`` runs them in CI.

The compiled kernels are replaced by :class:`FakeExtension`, a Python twin of ``cuda_ext/bindings.cpp``: the same
input checks (CUDA, contiguous, dtype, shapes; ``TORCH_CHECK`` → ``RuntimeError``) and the same output allocations, so
the trace runs ``ops/_cuda.py``, the code path a GPU user takes. ``march_rays_train``'s output size is data-dependent
(one host sync in the real kernel); the twin gives every ray a fixed budget of samples.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any, Optional

import torch
from torch import Tensor, nn
from torch._subclasses.fake_tensor import FakeTensor, FakeTensorMode
from torch.utils._pytree import tree_flatten

SKIP_REASON = "fake-CUDA traces need a CUDA build of torch (run in scripts/ci/cuda_venv.sh's venv)"
HAVE_CUDA_BUILD = torch.version.cuda is not None
SAMPLES_PER_RAY = 4
"""The fixed sample budget of the fake ``march_rays_train`` (the real one's size is read from the device)."""


class RealCpuFakeCuda(FakeTensorMode):
    """FakeTensorMode for CUDA only: ops on real (CPU) tensors run for real, anything touching CUDA is faked.

    Being a FakeTensorMode keeps torch from initialising a CUDA context (``Tensor.to("cuda")`` checks for this mode)
    and lets real CPU inputs meet fake CUDA tensors (``allow_non_fake_inputs``), where the device check then applies.
    """

    def __init__(self) -> None:
        super().__init__(allow_non_fake_inputs=True)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[override]
        kwargs = kwargs or {}
        flat, _ = tree_flatten((args, kwargs))
        device = kwargs.get("device")
        to_cuda = device is not None and torch.device(device).type == "cuda"
        if to_cuda or any(isinstance(a, FakeTensor) for a in flat):
            return super().__torch_dispatch__(func, types, args, kwargs)
        return func(*args, **kwargs)


def _module_apply(self: nn.Module, fn, recurse: bool = True) -> nn.Module:
    """``nn.Module._apply`` without ``swap_tensors`` (which refuses the fake parameters the fake mode keeps weak
    references to): each parameter that ``fn`` changes is replaced by a new Parameter, as torch does for a tensor
    subclass; one ``fn`` leaves alone (``.to()`` to where it already is) is kept."""
    if recurse:
        for child in self.children():
            child._apply(fn)
    for key, param in self._parameters.items():
        if param is None:
            continue
        with torch.no_grad():
            moved = fn(param)
        if moved is not param:
            self._parameters[key] = nn.Parameter(moved, requires_grad=param.requires_grad)
    for key, buf in self._buffers.items():
        if buf is not None:
            self._buffers[key] = fn(buf)
    return self


# ------------------------------------------------------------------------------- the twin of cuda_ext/bindings.cpp
def _check(t: Tensor, name: str, dtype: torch.dtype) -> None:
    if not t.is_cuda:
        raise RuntimeError(f"{name} must be a CUDA tensor")
    if not t.is_contiguous():
        raise RuntimeError(f"{name} must be contiguous")
    if t.dtype != dtype:
        raise RuntimeError(f"{name} must be {dtype}, got {t.dtype}")


def _rows(t: Tensor, name: str, rows: int, cols: int = -1) -> None:
    if t.shape[0] != rows or (cols >= 0 and (t.dim() != 2 or t.shape[1] != cols)):
        raise RuntimeError(f"{name} has shape {list(t.shape)}, expected [{rows}{'' if cols < 0 else f', {cols}'}]")


def _geom(bound: float, grid_res: int, dt: float, max_steps: int) -> None:
    if not (bound > 0 and dt > 0 and max_steps >= 1):
        raise RuntimeError("need bound > 0, dt > 0, max_steps >= 1")
    if not 1 <= grid_res <= 1024:
        raise RuntimeError("grid_res must be in [1, 1024]")


def _march_inputs(rays_o: Tensor, rays_d: Tensor, nears: Tensor, fars: Tensor, bitfield: Tensor, slots: Tensor,
                  grid_res: int) -> int:
    n = rays_o.shape[0]
    for t, name in ((rays_o, "rays_o"), (rays_d, "rays_d"), (nears, "nears"), (fars, "fars")):
        _check(t, name, torch.float32)
    _check(bitfield, "bitfield", torch.uint8)
    _check(slots, "slots", torch.int64)
    _rows(rays_o, "rays_o", n, 3)
    _rows(rays_d, "rays_d", n, 3)
    for t, name in ((nears, "nears"), (fars, "fars"), (slots, "slots")):
        _rows(t, name, n)
    if bitfield.dim() != 2 or bitfield.shape[1] * 8 != grid_res ** 3:
        raise RuntimeError("bitfield must be [S, grid_res^3 / 8]")
    return n


def _samples(sigmas: Tensor, rgbs: Tensor, ts: Tensor) -> None:
    for t, name in ((sigmas, "sigmas"), (rgbs, "rgbs"), (ts, "ts")):
        _check(t, name, torch.float32)
    if rgbs.dim() != 2 or rgbs.shape[0] != sigmas.shape[0]:
        raise RuntimeError("rgbs must be [M, C]")
    _rows(ts, "ts", sigmas.shape[0], 2)


def _grid_args(x: Tensor, keyframes: int, offsets: Tensor, resolutions: Tensor, t: Optional[Tensor],
               features: int) -> None:
    _check(x, "x", torch.float32)
    _check(offsets, "offsets", torch.int64)
    _check(resolutions, "resolutions", torch.int64)
    if x.dim() != 2 or x.shape[1] not in (3, 4):
        raise RuntimeError("x must be [N, 3] or [N, 4]")
    if features not in (1, 2, 4, 8):
        raise RuntimeError("features per level must be 1/2/4/8")
    if offsets.numel() != resolutions.numel() + 1:
        raise RuntimeError("offsets must have L + 1 entries")
    if keyframes > 1:
        if t is None:
            raise RuntimeError(f"t is required with {keyframes} keyframes")
        _check(t, "t", torch.float32)
        if t.numel() != x.shape[0]:
            raise RuntimeError("t must be [N]")


class FakeExtension:
    """``animate124._C`` as shapes: the checks and allocations of each binding, no kernel."""

    @staticmethod
    def near_far_from_aabb(rays_o: Tensor, rays_d: Tensor, aabb: Tensor, min_near: float) -> tuple[Tensor, Tensor]:
        for t, name in ((rays_o, "rays_o"), (rays_d, "rays_d"), (aabb, "aabb")):
            _check(t, name, torch.float32)
        n = rays_o.shape[0]
        _rows(rays_o, "rays_o", n, 3)
        _rows(rays_d, "rays_d", n, 3)
        if aabb.numel() != 6:
            raise RuntimeError("aabb must have 6 entries")
        return torch.empty(n, device=rays_o.device), torch.empty(n, device=rays_o.device)

    @staticmethod
    def march_rays_train(rays_o: Tensor, rays_d: Tensor, nears: Tensor, fars: Tensor, bitfield: Tensor, slots: Tensor,
                         noise: Tensor, bound: float, grid_res: int, dt: float, max_steps: int
                         ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        _geom(bound, grid_res, dt, max_steps)
        n = _march_inputs(rays_o, rays_d, nears, fars, bitfield, slots, grid_res)
        _check(noise, "noise", torch.float32)
        _rows(noise, "noise", n)
        k = min(SAMPLES_PER_RAY, max_steps)
        dev = rays_o.device
        m = n * k
        rays = torch.stack([torch.arange(n, device=dev, dtype=torch.int32) * k,
                            torch.full((n,), k, device=dev, dtype=torch.int32)], dim=1)
        return (torch.empty(m, 3, device=dev), torch.empty(m, 3, device=dev), torch.empty(m, 2, device=dev), rays)

    @staticmethod
    def march_rays(rays_o: Tensor, rays_d: Tensor, nears: Tensor, fars: Tensor, bitfield: Tensor, slots: Tensor,
                   noise: Optional[Tensor], alive: Tensor, rays_k: Tensor, rays_n: Tensor, bound: float, grid_res: int,
                   dt: float, n_step: int, max_steps: int) -> tuple[Tensor, Tensor, Tensor]:
        _geom(bound, grid_res, dt, max_steps)
        n = _march_inputs(rays_o, rays_d, nears, fars, bitfield, slots, grid_res)
        _check(alive, "alive", torch.int64)
        _check(rays_k, "rays_k", torch.int32)
        _check(rays_n, "rays_n", torch.int32)
        _rows(rays_k, "rays_k", n)
        _rows(rays_n, "rays_n", n)
        if n_step < 1:
            raise RuntimeError("n_step must be >= 1")
        if noise is not None:
            _check(noise, "noise", torch.float32)
            _rows(noise, "noise", n)
        a, dev = alive.shape[0], rays_o.device
        return (torch.zeros(a, n_step, 3, device=dev), torch.zeros(a, n_step, 3, device=dev),
                torch.zeros(a, n_step, 2, device=dev))

    @staticmethod
    def composite_rays_train_forward(sigmas: Tensor, rgbs: Tensor, ts: Tensor, rays: Tensor, t_thresh: float
                                     ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        _samples(sigmas, rgbs, ts)
        _check(rays, "rays", torch.int32)
        n, c = rays.shape[0], rgbs.shape[1]
        _rows(rays, "rays", n, 2)
        return (torch.zeros_like(sigmas), sigmas.new_zeros(n), sigmas.new_zeros(n), sigmas.new_zeros(n, c))

    @staticmethod
    def composite_rays_train_backward(grad_weights: Tensor, grad_weights_sum: Tensor, grad_depth: Tensor,
                                      grad_image: Tensor, sigmas: Tensor, rgbs: Tensor, ts: Tensor, rays: Tensor,
                                      t_thresh: float) -> tuple[Tensor, Tensor]:
        _samples(sigmas, rgbs, ts)
        _check(rays, "rays", torch.int32)
        n, c = rays.shape[0], rgbs.shape[1]
        for t, name in ((grad_weights, "grad_weights"), (grad_weights_sum, "grad_weights_sum"),
                        (grad_depth, "grad_depth"), (grad_image, "grad_image")):
            _check(t, name, torch.float32)
        _rows(grad_weights, "grad_weights", sigmas.shape[0])
        _rows(grad_weights_sum, "grad_weights_sum", n)
        _rows(grad_depth, "grad_depth", n)
        _rows(grad_image, "grad_image", n, c)
        return torch.zeros_like(sigmas), torch.zeros_like(rgbs)

    @staticmethod
    def composite_rays(sigmas: Tensor, rgbs: Tensor, ts: Tensor, alive: Tensor, optical_depth: Tensor,
                       weights_sum: Tensor, depth: Tensor, image: Tensor, t_thresh: float) -> None:
        _check(alive, "alive", torch.int64)
        a = alive.shape[0]
        if sigmas.dim() != 2 or sigmas.shape[0] != a:
            raise RuntimeError("sigmas must be [n_alive, n_step]")
        s, c = sigmas.shape[1], image.shape[1]
        for t, name in ((sigmas, "sigmas"), (rgbs, "rgbs"), (ts, "ts")):
            _check(t, name, torch.float32)
        if tuple(rgbs.shape) != (a, s, c):
            raise RuntimeError("rgbs must be [n_alive, n_step, C]")
        if tuple(ts.shape) != (a, s, 2):
            raise RuntimeError("ts must be [n_alive, n_step, 2]")
        n = optical_depth.shape[0]
        _check(optical_depth, "optical_depth", torch.float64)
        for t, name in ((weights_sum, "weights_sum"), (depth, "depth"), (image, "image")):
            _check(t, name, torch.float32)
        _rows(weights_sum, "weights_sum", n)
        _rows(depth, "depth", n)
        _rows(image, "image", n, c)

    @staticmethod
    def morton3d(coords: Tensor) -> Tensor:
        _check(coords, "coords", torch.int64)
        _rows(coords, "coords", coords.shape[0], 3)
        return coords.new_empty(coords.shape[0])

    @staticmethod
    def morton3d_invert(codes: Tensor) -> Tensor:
        _check(codes, "codes", torch.int64)
        return codes.new_empty(codes.shape[0], 3)

    @staticmethod
    def packbits(grid: Tensor, thresh: Tensor) -> Tensor:
        _check(grid, "grid", torch.float32)
        _check(thresh, "thresh", torch.float32)
        if grid.dim() != 2 or grid.shape[1] % 8:
            raise RuntimeError("grid must be [S, cells] with cells % 8 == 0")
        if thresh.numel() != grid.shape[0]:
            raise RuntimeError("thresh must have one entry per slot")
        return torch.empty(grid.shape[0], grid.shape[1] // 8, dtype=torch.uint8, device=grid.device)

    @staticmethod
    def grid_encode_forward(x: Tensor, embeddings: Tensor, offsets: Tensor, resolutions: Tensor, hash: bool,
                            t: Optional[Tensor]) -> Tensor:
        _check(embeddings, "embeddings", torch.float32)
        if embeddings.dim() != 3:
            raise RuntimeError("embeddings must be [K, total, F]")
        f = embeddings.shape[2]
        _grid_args(x, embeddings.shape[0], offsets, resolutions, t, f)
        return x.new_empty(x.shape[0], resolutions.numel() * f)

    @staticmethod
    def grid_encode_backward(grad_out: Tensor, x: Tensor, keyframes: int, total: int, features: int, offsets: Tensor,
                             resolutions: Tensor, hash: bool, t: Optional[Tensor]) -> Tensor:
        _grid_args(x, keyframes, offsets, resolutions, t, features)
        _check(grad_out, "grad_out", torch.float32)
        _rows(grad_out, "grad_out", x.shape[0], resolutions.numel() * features)
        return x.new_zeros(keyframes, total, features)

    @staticmethod
    def keyframe_tv_forward(embeddings: Tensor) -> Tensor:
        _check(embeddings, "embeddings", torch.float32)
        if embeddings.dim() != 3:
            raise RuntimeError("embeddings must be [K, total, F]")
        return embeddings.new_zeros((), dtype=torch.float64)

    @staticmethod
    def keyframe_tv_backward(embeddings: Tensor, scale: Tensor) -> Tensor:
        _check(embeddings, "embeddings", torch.float32)
        _check(scale, "scale", torch.float32)
        if embeddings.dim() != 3 or scale.numel() != 1:
            raise RuntimeError("embeddings must be [K, total, F], scale a scalar")
        return torch.empty_like(embeddings)


def extension_names() -> set[str]:
    return {n for n in vars(FakeExtension) if not n.startswith("_")}


@contextlib.contextmanager
def fake_cuda(monkeypatch: Any) -> Iterator[RealCpuFakeCuda]:
    """Real CPU, fake CUDA, the kernels' twin as ``animate124._C`` and CUDA autocast usable without a GPU."""
    from animate124.ops import _backend

    monkeypatch.delenv("ANIMATE124_FORCE_REFERENCE", raising=False)
    monkeypatch.setattr(_backend, "get", lambda: FakeExtension)
    monkeypatch.setattr(_backend, "available", lambda: True)
    # torch.amp.autocast("cuda") disables itself (with a warning) when no GPU is present; a GPU run has one. The
    # check it calls lives in torch.cuda.amp.common (patched by name; not a use of the deprecated torch.cuda.amp API)
    monkeypatch.setattr("torch.cuda.amp.common.amp_definitely_not_available", lambda: False)
    monkeypatch.setattr(nn.Module, "_apply", _module_apply)
    # safetensors' load_file(device="cuda") allocates through the CUDA runtime itself, below the dispatcher: load on
    # the CPU, then move (the same tensors, through the traced .to())
    import animate124.io.checkpoint as ckpt

    real_load = ckpt.load_file
    monkeypatch.setattr(ckpt, "load_file", lambda path, device="cpu": {
        k: v.to(device) for k, v in real_load(path, device="cpu").items()})
    torch._C._ensureCUDADeviceGuardSet()  # device guards as no-ops (what FakeTensorMode does without a GPU)
    with RealCpuFakeCuda() as mode:
        yield mode
