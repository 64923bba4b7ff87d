"""Input validation shared by the public ops (ValueError before anything is launched; STYLE.md §B)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor

from animate124.ops import _backend

_FLOATS = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
_INTS = (torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64)


def check_tensor(name: str, x: object, shape: Sequence[int | None] | None = None,
                 dtypes: Sequence[torch.dtype] | None = None) -> Tensor:
    """Raise ValueError unless ``x`` is a Tensor with ``len(shape)`` dims matching ``shape`` (None = any size)."""
    if not isinstance(x, Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if shape is not None:
        ok = x.dim() == len(shape) and all(s is None or s == xs for s, xs in zip(shape, x.shape))
        if not ok:
            want = "[" + ", ".join("*" if s is None else str(s) for s in shape) + "]"
            raise ValueError(f"{name} must have shape {want}, got {list(x.shape)}")
    if dtypes is not None and x.dtype not in dtypes:
        raise ValueError(f"{name} must have dtype in {[str(d) for d in dtypes]}, got {x.dtype}")
    return x


def check_float(name: str, x: object, shape: Sequence[int | None] | None = None) -> Tensor:
    return check_tensor(name, x, shape, _FLOATS)


def check_int(name: str, x: object, shape: Sequence[int | None] | None = None) -> Tensor:
    return check_tensor(name, x, shape, _INTS)


def check_same_device(**tensors: Tensor) -> None:
    devices = {k: v.device for k, v in tensors.items()}
    if len(set(devices.values())) > 1:
        raise ValueError(f"all inputs must be on one device, got {devices}")


def dispatch(name: str, *tensors: Tensor) -> Callable[..., Any]:
    """The CUDA implementation of op ``name`` when the inputs are on CUDA and the kernels are usable, else the
    pure-torch reference. An op the compiled extension does not (yet) provide falls back to the reference."""
    if _backend.use_cuda(*tensors):
        from animate124.ops import _cuda

        fn = getattr(_cuda, name, None)
        if fn is not None:
            return fn
    from animate124.ops import _reference

    return getattr(_reference, name)


def check_values(ok: Tensor, message: str) -> None:
    """A data-dependent input check without a host sync on the GPU.

    CPU tensors are read on the host (free) and raise ``ValueError(message)``; device (and fake) tensors get a
    device-side assert (``torch._assert_async``), which CUDA reports asynchronously, so the step never waits.
    """
    from torch._subclasses.fake_tensor import is_fake

    if ok.device.type == "cpu" and not is_fake(ok):
        if not bool(ok):
            raise ValueError(message)
    else:
        torch._assert_async(ok, message)
