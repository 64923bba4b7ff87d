"""Record where a training step reads tensor values on the host (issue 11).

On a GPU, ``.item()``, ``float(t)``, ``bool(t)``, ``.tolist()``, ``nonzero`` and boolean-mask indexing (whose output
size depends on the data) wait for every queued kernel: the step stalls. :class:`HostSyncRecorder` is a
``TorchFunctionMode`` that records each such call together with the innermost ``animate124`` frame that made it, so a
CPU test can hold the step to an explicit allow-list (tests/test_host_syncs.py). The fake-CUDA traces
(tests/test_fake_cuda_phases.py) are the stricter check where a CUDA build of torch is available: there any host
read of a CUDA value raises.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.overrides import TorchFunctionMode

PACKAGE = Path(__file__).resolve().parents[1] / "animate124"

READS = {
    torch.Tensor.item: "item",
    torch.Tensor.__bool__: "bool",
    torch.Tensor.__float__: "float",
    torch.Tensor.__int__: "int",
    torch.Tensor.__index__: "index",
    torch.Tensor.tolist: "tolist",
    torch.Tensor.numpy: "numpy",
    torch.Tensor.nonzero: "nonzero",
    torch.nonzero: "nonzero",
    torch.masked_select: "masked_select",
    torch.Tensor.masked_select: "masked_select",
    torch.unique: "unique",
    torch.Tensor.unique: "unique",
    torch.repeat_interleave: "repeat_interleave",
    torch.Tensor.repeat_interleave: "repeat_interleave",
}
"""Tensor calls that read values on the host (``any``/``all`` are not: their result is read through bool/item)."""


@dataclass(frozen=True)
class SyncSite:
    """Where a host read happened: the animate124 file (relative to the package) and function, and what it was."""

    file: str
    function: str
    kind: str

    def __str__(self) -> str:
        return f"{self.file}::{self.function} ({self.kind})"


def _caller() -> tuple[str, str] | None:
    """The innermost frame inside the animate124 package (None when the call came from elsewhere)."""
    frame = sys._getframe(2)
    while frame is not None:
        path = Path(frame.f_code.co_filename)
        try:
            rel = path.resolve().relative_to(PACKAGE)
        except ValueError:
            frame = frame.f_back
            continue
        return rel.as_posix(), frame.f_code.co_name
    return None


def _is_mask_index(args: tuple[Any, ...]) -> bool:
    index = args[1] if len(args) > 1 else None
    items = index if isinstance(index, tuple) else (index,)
    return any(isinstance(i, torch.Tensor) and i.dtype == torch.bool for i in items)


class HostSyncRecorder(TorchFunctionMode):
    """Collects the :class:`SyncSite` of every host read made (directly or through a library) by animate124 code."""

    def __init__(self) -> None:
        super().__init__()
        self.sites: list[SyncSite] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        kind = READS.get(func)
        if func is torch.Tensor.__getitem__ and _is_mask_index(args):
            kind = "boolean mask"
        if func in (torch.repeat_interleave, torch.Tensor.repeat_interleave) and (
                "output_size" in kwargs or not isinstance(args[1] if len(args) > 1 else kwargs.get("repeats"),
                                                          torch.Tensor)):
            kind = None  # integer repeats, or the output size given: no read
        if kind is not None:
            where = _caller()
            if where is not None:
                self.sites.append(SyncSite(where[0], where[1], kind))
        return func(*args, **kwargs)


def unexpected(sites: list[SyncSite], allowed: dict[tuple[str, str], str]) -> list[str]:
    """Sites not on the allow-list ``{(file, function or "*"): reason}``, once each."""
    out = []
    for s in dict.fromkeys(sites):
        if (s.file, s.function) not in allowed and (s.file, "*") not in allowed:
            out.append(str(s))
    return out
