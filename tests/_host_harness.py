"""ctypes access to cuda_ext/testing/host_harness.cu: the kernels' per-element bodies run in host loops on CPU tensors.

``harness()`` builds the shared library with ``nvcc -shared`` once per source hash (cached under
``TORCH_EXTENSIONS_DIR``); ``FakeExtension`` exposes the same functions, argument order and return values as
``cuda_ext/bindings.cpp`` on CPU tensors, so ``animate124.ops._cuda`` can be exercised end to end without a GPU.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
HARNESS = ROOT / "cuda_ext" / "testing" / "host_harness.cu"
INCLUDE = ROOT / "cuda_ext" / "include"
HAVE_NVCC = shutil.which("nvcc") is not None

_lib: list[ctypes.CDLL] = []


def harness() -> ctypes.CDLL:
    """Build (once per source hash, cached in TORCH_EXTENSIONS_DIR or the temp dir) and load the harness."""
    if _lib:
        return _lib[0]
    digest = hashlib.sha256()
    for f in [HARNESS, *sorted(INCLUDE.glob("*.cuh"))]:
        digest.update(f.read_bytes())
    cache = Path(os.environ.get("TORCH_EXTENSIONS_DIR", tempfile.gettempdir())) / "a124_host_harness"
    cache.mkdir(parents=True, exist_ok=True)
    so = cache / f"harness_{digest.hexdigest()[:16]}.so"
    if not so.exists():
        tmp = so.with_suffix(f".{os.getpid()}.tmp")
        cmd = ["nvcc", "-shared", "-Xcompiler", "-fPIC", "-Xcompiler", "-ffp-contract=off", "-O2", "-std=c++17",
               "-I", str(INCLUDE), str(HARNESS), "-o", str(tmp)]
        subprocess.run(cmd, check=True, capture_output=True)
        tmp.replace(so)
    _lib.append(ctypes.CDLL(str(so)))
    return _lib[0]


def p(t: torch.Tensor | None) -> ctypes.c_void_p:
    """Raw pointer of a contiguous CPU tensor (NULL for None)."""
    if t is None:
        return ctypes.c_void_p(None)
    assert t.is_contiguous()
    return ctypes.c_void_p(t.data_ptr())


I64, F32, I32 = ctypes.c_int64, ctypes.c_float, ctypes.c_int


def geom(bound: float, res: int, dt: float, max_steps: int) -> list:
    scale = torch.tensor(res / (2.0 * bound), dtype=torch.float32).item()
    return [F32(bound), F32(scale), F32(dt), I32(res), I32(max_steps)]


# ----------------------------------------------------------------------------------------------- host implementations
def host_march_train(rays_o, rays_d, nears, fars, bitfield, slots, noise, bound, grid_res, dt, max_steps):
    lib, n = harness(), rays_o.shape[0]
    common = [p(rays_o), p(rays_d), p(nears), p(fars), p(bitfield), I64(bitfield.shape[1]), p(slots),
              p(noise), I64(n), *geom(bound, grid_res, dt, max_steps)]
    counts = torch.zeros(n, dtype=torch.int32)
    lib.h_march_count(*common, p(counts))
    offsets = (torch.cumsum(counts, 0) - counts).to(torch.int32)
    m = int(counts.sum())
    xyzs, dirs, ts = torch.zeros(m, 3), torch.zeros(m, 3), torch.zeros(m, 2)
    rays = torch.zeros(n, 2, dtype=torch.int32)
    lib.h_march_write(*common, p(offsets), p(xyzs), p(dirs), p(ts), p(rays))
    return xyzs, dirs, ts, rays


def host_composite(sigmas, rgbs, ts, rays, t_thresh):
    n, c = rays.shape[0], rgbs.shape[1]
    w, ws, depth, image = torch.zeros(sigmas.shape[0]), torch.zeros(n), torch.zeros(n), torch.zeros(n, c)
    harness().h_composite_forward(p(sigmas), p(rgbs), p(ts), p(rays), I64(n), I32(c), F32(t_thresh), p(w),
                                   p(ws), p(depth), p(image))
    return w, ws, depth, image


def host_composite_backward(grads, sigmas, rgbs, ts, rays, t_thresh):
    n, c = rays.shape[0], rgbs.shape[1]
    gs, gr = torch.zeros_like(sigmas), torch.zeros_like(rgbs)
    harness().h_composite_backward(*[p(g.contiguous()) for g in grads], p(sigmas), p(rgbs), p(ts), p(rays),
                                    I64(n), I32(c), F32(t_thresh), p(gs), p(gr))
    return gs, gr


def host_grid(forward, x, embeddings, offsets, resolutions, kind, t, payload):
    k, total, f = embeddings.shape
    out = torch.zeros(x.shape[0], resolutions.shape[0] * f) if forward else torch.zeros_like(embeddings)
    rc = harness().h_grid_encode(I32(int(forward)), p(x), p(t), p(offsets), p(resolutions), I64(x.shape[0]),
                                  I32(resolutions.shape[0]), I32(k), I64(total), I32(int(kind == "hash")),
                                  I32(x.shape[1]), I32(f), p(payload.contiguous()), p(out))
    assert rc == 0
    return out




def host_march_infer(rays_o, rays_d, nears, fars, bitfield, slots, noise, alive, rays_k, rays_n, bound, grid_res,
                     dt, n_step, max_steps):
    a = alive.shape[0]
    xyzs, dirs, ts = torch.zeros(a, n_step, 3), torch.zeros(a, n_step, 3), torch.zeros(a, n_step, 2)
    harness().h_march_infer(p(rays_o), p(rays_d), p(nears), p(fars), p(bitfield), I64(bitfield.shape[1]), p(slots),
                            p(noise), p(alive), I64(a), I32(n_step), *geom(bound, grid_res, dt, max_steps),
                            p(rays_k), p(rays_n), p(xyzs), p(dirs), p(ts))
    return xyzs, dirs, ts


def host_composite_infer(sigmas, rgbs, ts, alive, optical_depth, weights_sum, depth, image, t_thresh):
    harness().h_composite_infer(p(sigmas), p(rgbs), p(ts), p(alive), I64(alive.shape[0]), I32(sigmas.shape[1]),
                                I32(rgbs.shape[-1]), F32(t_thresh), p(optical_depth), p(weights_sum), p(depth),
                                p(image))


class FakeExtension:
    """``animate124._C`` on CPU tensors: the functions of cuda_ext/bindings.cpp, same names, argument order and
    results, computed by the host harness (so ``animate124.ops._cuda`` can be tested without a GPU)."""

    @staticmethod
    def near_far_from_aabb(rays_o, rays_d, aabb, min_near):
        n = rays_o.shape[0]
        nears, fars = torch.empty(n), torch.empty(n)
        harness().h_near_far(p(rays_o), p(rays_d), p(aabb), I64(n), F32(min_near), p(nears), p(fars))
        return nears, fars

    @staticmethod
    def march_rays_train(rays_o, rays_d, nears, fars, bitfield, slots, noise, bound, grid_res, dt, max_steps):
        return host_march_train(rays_o, rays_d, nears, fars, bitfield, slots, noise, bound, grid_res, dt, max_steps)

    @staticmethod
    def march_rays(rays_o, rays_d, nears, fars, bitfield, slots, noise, alive, rays_k, rays_n, bound, grid_res, dt,
                   n_step, max_steps):
        assert rays_k.dtype == torch.int32 and rays_n.dtype == torch.int32 and alive.dtype == torch.int64
        return host_march_infer(rays_o, rays_d, nears, fars, bitfield, slots, noise, alive, rays_k, rays_n, bound,
                                grid_res, dt, n_step, max_steps)

    @staticmethod
    def composite_rays_train_forward(sigmas, rgbs, ts, rays, t_thresh):
        assert rays.dtype == torch.int32
        return host_composite(sigmas, rgbs, ts, rays, t_thresh)

    @staticmethod
    def composite_rays_train_backward(gw, gws, gd, gimg, sigmas, rgbs, ts, rays, t_thresh):
        return host_composite_backward((gw, gws, gd, gimg), sigmas, rgbs, ts, rays, t_thresh)

    @staticmethod
    def composite_rays(sigmas, rgbs, ts, alive, optical_depth, weights_sum, depth, image, t_thresh):
        assert optical_depth.dtype == torch.float64
        host_composite_infer(sigmas, rgbs, ts, alive, optical_depth, weights_sum, depth, image, t_thresh)

    @staticmethod
    def morton3d(coords):
        codes = torch.empty(coords.shape[0], dtype=torch.int64)
        harness().h_morton3d(p(coords), I64(coords.shape[0]), p(codes))
        return codes

    @staticmethod
    def morton3d_invert(codes):
        coords = torch.empty(codes.shape[0], 3, dtype=torch.int64)
        harness().h_morton3d_invert(p(codes), I64(codes.shape[0]), p(coords))
        return coords

    @staticmethod
    def packbits(grid, thresh):
        bits = torch.empty(grid.shape[0], grid.shape[1] // 8, dtype=torch.uint8)
        harness().h_packbits(p(grid), p(thresh), I64(grid.shape[0]), I64(grid.shape[1]), p(bits))
        return bits

    @staticmethod
    def grid_encode_forward(x, embeddings, offsets, resolutions, hash_, t):
        kind = "hash" if hash_ else "tiled"
        return host_grid(True, x, embeddings, offsets, resolutions, kind, t, embeddings)

    @staticmethod
    def grid_encode_backward(grad_out, x, keyframes, total, features, offsets, resolutions, hash_, t):
        kind = "hash" if hash_ else "tiled"
        shape_only = torch.empty(keyframes, total, features)
        return host_grid(False, x, shape_only, offsets, resolutions, kind, t, grad_out)

    @staticmethod
    def keyframe_tv_forward(embeddings):
        return (embeddings[1:].double() - embeddings[:-1].double()).square().sum()

    @staticmethod
    def keyframe_tv_backward(embeddings, scale):
        grad = torch.empty_like(embeddings)
        k = embeddings.shape[0]
        harness().h_keyframe_tv_grad(p(embeddings), I32(k), I64(embeddings[0].numel()), F32(float(scale)), p(grad))
        return grad
