"""Write frames as mp4 (H.264, imageio-ffmpeg), gif (Pillow) or numbered PNGs, and contact sheets.

Sizes are never changed: mp4 frames are written with ``macro_block_size=1``; even sizes use yuv420p (plays
everywhere), odd sizes use yuv444p (x264's 4:2:0 needs even sizes; some players cannot show 4:4:4, a warning says so).
"""

from __future__ import annotations

import logging
from pathlib import Path

import imageio
import numpy as np
import torch
from torch import Tensor

from animate124.errors import InputError

log = logging.getLogger(__name__)

VIDEO_SUFFIXES = (".mp4", ".gif")
_warned_odd = False


def to_uint8(frames: Tensor) -> np.ndarray:
    """[N, H, W, C] float in [0, 1] → uint8 numpy (C = 1 is expanded to 3)."""
    x = frames.detach().float().clamp(0.0, 1.0).mul(255.0).round().to(torch.uint8).cpu().numpy()
    return np.repeat(x, 3, axis=-1) if x.shape[-1] == 1 else x


def output_kind(out: str | Path) -> str:
    """``mp4`` | ``gif`` | ``dir`` from the output path's suffix (no suffix = a PNG folder)."""
    suffix = Path(out).suffix.lower()
    if suffix in VIDEO_SUFFIXES:
        return suffix[1:]
    if suffix in ("", ".png"):
        return "dir"
    raise InputError(f"out={out} has an unknown suffix {suffix!r}; use FILE.mp4, FILE.gif or a folder for PNG frames")


def write_frames(out: str | Path, frames: Tensor, fps: float = 24.0, quality: int = 8) -> Path:
    """Write [N, H, W, C] frames in [0, 1] to ``out`` (.mp4, .gif, or a folder of 000.png, 001.png, ...).

    Args:
        out: output path; its suffix picks the format (see :func:`output_kind`).
        frames: [N, H, W, 3] (or [N, H, W, 1]) float in [0, 1].
        fps: frames per second (video formats).
        quality: mp4 quality 0–10.

    Returns:
        The written path.
    """
    out = Path(out)
    data = to_uint8(frames)
    kind = output_kind(out)
    if kind == "dir":
        out.mkdir(parents=True, exist_ok=True)
        digits = max(3, len(str(len(data) - 1)))
        for i, frame in enumerate(data):
            imageio.imwrite(out / f"{i:0{digits}d}.png", frame)
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    if kind == "gif":
        # Pillow stores durations in ms; loop=0 repeats forever. Pillow merges identical consecutive frames into one
        # longer frame (the play time is kept, the frame count is not).
        imageio.v3.imwrite(out, data, duration=1000.0 / fps, loop=0, plugin="pillow")
        return out
    _write_mp4(out, data, fps, quality)
    return out


def _write_mp4(out: Path, data: np.ndarray, fps: float, quality: int) -> None:
    global _warned_odd
    h, w = data.shape[1:3]
    even = h % 2 == 0 and w % 2 == 0
    if not even and not _warned_odd:
        log.warning("%dx%d is odd: writing H.264 4:4:4 (yuv444p) so the size is kept; some players need even sizes",
                    w, h)
        _warned_odd = True
    imageio.mimwrite(out, list(data), fps=fps, quality=quality, macro_block_size=1, codec="libx264",
                     pixelformat="yuv420p" if even else "yuv444p", ffmpeg_log_level="error")


def read_frames(path: str | Path) -> np.ndarray:
    """Read back a video or PNG folder as uint8 [N, H, W, 3] (tests, metrics on saved videos)."""
    path = Path(path)
    if path.is_dir():
        files = sorted(path.glob("*.png"))
        return np.stack([np.asarray(imageio.imread(f))[..., :3] for f in files])
    if path.suffix.lower() == ".gif":
        return np.asarray(imageio.v3.imread(path, plugin="pillow", mode="RGB"))
    return np.stack([np.asarray(f)[..., :3] for f in imageio.mimread(path, memtest=False)])


def sibling(out: str | Path, tag: str, suffix: str | None = None) -> Path:
    """``video.mp4`` → ``video_<tag>.mp4`` (or ``frames/`` → ``frames_<tag>/``); ``suffix`` replaces the suffix."""
    out = Path(out)
    ext = out.suffix if suffix is None else suffix
    return out.with_name(f"{out.stem if out.suffix else out.name}_{tag}{ext}")


def depth_to_gray(depth: Tensor, alpha: Tensor, value_range: tuple[float, float] | None = None) -> Tensor:
    """Depth frames → gray images, near = bright, background (alpha ≈ 0) black.

    One range for the whole video (no per-frame stretching, so depth does not flicker): ``value_range`` or the
    1st/99th percentile of the depth of pixels with alpha > 0.5. Depth is the expected distance Σw·t, so it is
    divided by alpha first.

    Args:
        depth: [N, H, W, 1].
        alpha: [N, H, W, 1].
        value_range: (near, far) or None.

    Returns:
        [N, H, W, 1] in [0, 1].
    """
    d = depth / alpha.clamp_min(1e-6)
    fg = alpha > 0.5
    if value_range is None:
        vals = d[fg]
        if vals.numel() == 0:
            return torch.zeros_like(depth)
        sample = vals if vals.numel() <= 1_000_000 else vals[torch.randperm(vals.numel())[:1_000_000]]
        lo, hi = torch.quantile(sample.float(), torch.tensor([0.01, 0.99])).tolist()
    else:
        lo, hi = value_range
    span = max(hi - lo, 1e-6)
    return ((hi - d) / span).clamp(0.0, 1.0) * alpha.clamp(0.0, 1.0)


def tile(images: Tensor, rows: int, cols: int, pad: int = 2, pad_value: float = 1.0) -> Tensor:
    """Tile rows·cols images [rows·cols, H, W, C] (row-major) into one [rows·H + pad·(rows−1), ..., C] image."""
    n, h, w, c = images.shape
    if n != rows * cols:
        raise ValueError(f"tile needs rows·cols = {rows * cols} images, got {n}")
    sheet = torch.full((rows * h + pad * (rows - 1), cols * w + pad * (cols - 1), c), pad_value, dtype=images.dtype)
    for k in range(n):
        r, q = divmod(k, cols)
        sheet[r * (h + pad): r * (h + pad) + h, q * (w + pad): q * (w + pad) + w] = images[k]
    return sheet


def write_png(path: str | Path, image: Tensor) -> Path:
    """Write one [H, W, C] image in [0, 1] as PNG."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    imageio.imwrite(path, to_uint8(image[None])[0])
    return path
