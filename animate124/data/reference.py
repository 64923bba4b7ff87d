"""The input picture as reference-view tensors (spec §2): RGBA → padded square → rgb on white, mask, depth.

Accepted inputs:
- an RGBA image (background removed; e.g. ``rgba.png`` from ``python -m animate124.preprocess``);
- an RGB image plus an optional mask image (white = object); an RGB image without mask is used as fully opaque,
  with a warning naming the fix (run the preprocessing CLI);
- any size and aspect ratio: centred zero padding to a square (the original's, no re-centring, spec §14.18);
- EXIF orientation applied (``ImageOps.exif_transpose``); files are opened by content, not extension (the
  benchmark's astronaut-horse ``image.jpg`` is a PNG);
- optional depth map (``depth.png``: MiDaS disparity, 0 outside the mask), padded the same way.

Rejected (with ``check_object=True``, as the generation phases load it): an empty alpha mask (nothing to train on),
an object smaller than :data:`MIN_OBJECT_PX` pixels across, or one covering less than :data:`MIN_MASK_AREA` of the
padded square; each is a one-line InputError naming the fix.

At a given size (:meth:`ReferenceImage.at`; area-averaging resize like OpenCV's INTER_AREA):
``rgb = rgb·α + (1 − α)``, ``mask = α > 0.5``, ``depth = nonzero_normalize(1 − png/255)`` on the mask, 0 elsewhere.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Union

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps, UnidentifiedImageError
from torch import Tensor

from animate124.errors import InputError
from animate124.losses import nonzero_normalize_depth

log = logging.getLogger(__name__)

MIN_OBJECT_PX = 16
"""Smallest object (the longer side of the bounding box of α > 0.5, in input pixels) a generation phase accepts."""
MIN_MASK_AREA = 0.002
"""Smallest fraction of the padded square the object (α > 0.5) may cover."""


def open_image(path: Union[str, Path], what: str = "image") -> Image.Image:
    """Open by content (any PIL format, whatever the extension), EXIF orientation applied, fully decoded.

    Raises:
        InputError: missing, unreadable or corrupt file (one line naming it).
    """
    p = Path(path)
    if not p.is_file():
        raise InputError(f"{what} {p} not found; check the path")
    try:
        with Image.open(p) as im:
            im.load()
            out = ImageOps.exif_transpose(im)
            return out if out is not None else im
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise InputError(f"{what} {p} is not a readable image ({type(e).__name__}); re-export it as PNG or JPEG") from e


def pad_to_square(arr: np.ndarray) -> np.ndarray:
    """Centred zero padding of ``[H, W, C]`` to ``[S, S, C]``, S = max(H, W) (extra pixel at the bottom/right)."""
    h, w = arr.shape[:2]
    s = max(h, w)
    top, left = (s - h) // 2, (s - w) // 2
    out = np.zeros((s, s) + arr.shape[2:], dtype=arr.dtype)
    out[top:top + h, left:left + w] = arr
    return out


def _to_rgba(im: Image.Image, mask: Optional[Image.Image], path: Path) -> np.ndarray:
    """[H, W, 4] float32 in [0, 1]."""
    has_alpha = im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info)
    rgba = np.asarray(im.convert("RGBA"), dtype=np.float32) / 255.0
    if mask is not None:
        m = mask.convert("L")
        if m.size != im.size:
            raise InputError(f"mask size {m.size} differs from image {path} size {im.size}; "
                             "give a mask of the same size")
        rgba[..., 3] = np.asarray(m, dtype=np.float32) / 255.0
    elif not has_alpha:
        log.warning("%s has no alpha channel and no mask was given: the whole picture is used as the object; "
                    "run `python -m animate124.preprocess image=%s` to remove the background", path, path)
    return rgba


@dataclass
class ReferenceViews:
    """Reference tensors at one size (all on CPU, float32)."""

    rgb: Tensor
    """[3, S, S] composited on white."""
    mask: Tensor
    """[1, S, S] float {0, 1} (α > 0.5)."""
    depth: Optional[Tensor]
    """[1, S, S] normalised depth-like ordering (larger = farther) on the mask, 0 elsewhere; None without depth."""
    alpha: Tensor
    """[1, S, S] the resized alpha."""

    def to(self, device: Union[str, torch.device]) -> "ReferenceViews":
        """The same views on ``device``."""
        return ReferenceViews(rgb=self.rgb.to(device), mask=self.mask.to(device), alpha=self.alpha.to(device),
                              depth=self.depth.to(device) if self.depth is not None else None)


@dataclass
class ReferenceImage:
    """The padded-square input at full resolution."""

    rgba: Tensor
    """[4, N, N] float in [0, 1]."""
    disparity: Optional[Tensor] = None
    """[1, N', N'] depth.png / 255 (MiDaS disparity, larger = closer), padded square; None without depth."""
    path: Optional[str] = None
    """Source path (for messages)."""

    @property
    def size(self) -> int:
        return int(self.rgba.shape[-1])

    def at(self, size: int) -> ReferenceViews:
        """Tensors at ``size``² (area-averaging downsampling, bilinear when upsampling)."""
        rgba = _resize(self.rgba, size)
        alpha = rgba[3:4].clamp(0.0, 1.0)
        rgb = rgba[:3] * alpha + (1.0 - alpha)
        mask = (alpha > 0.5).float()
        depth = None
        if self.disparity is not None:
            d = 1.0 - _resize(self.disparity, size)
            depth = nonzero_normalize_depth(d, mask > 0.5) * mask
        return ReferenceViews(rgb=rgb.clamp(0.0, 1.0), mask=mask, depth=depth, alpha=alpha)


def _resize(x: Tensor, size: int) -> Tensor:
    """[C, H, W] → [C, size, size]: area averaging when shrinking (≈ INTER_AREA), bilinear otherwise."""
    if x.shape[-1] == size and x.shape[-2] == size:
        return x.clone()
    mode = "area" if size < x.shape[-1] else "bilinear"
    kwargs = {} if mode == "area" else {"align_corners": False}
    return F.interpolate(x.unsqueeze(0), size=(size, size), mode=mode, **kwargs)[0]


def check_object(rgba: np.ndarray, path: Union[str, Path], min_object_px: int = MIN_OBJECT_PX,
                 min_mask_area: float = MIN_MASK_AREA) -> None:
    """Raise InputError when the padded ``[S, S, 4]`` picture holds no usable object (see the module docstring)."""
    inside = rgba[..., 3] > 0.5
    fix = f"run `python -m animate124.preprocess image={path}` on the original picture"
    if not inside.any():
        raise InputError(f"image {path} has an empty alpha mask (every pixel is transparent), so there is no object "
                         f"to train on; {fix}, or give an RGB image with a mask")
    rows, cols = np.nonzero(inside.any(axis=1))[0], np.nonzero(inside.any(axis=0))[0]
    h, w = int(rows[-1] - rows[0] + 1), int(cols[-1] - cols[0] + 1)
    if max(h, w) < min_object_px:
        raise InputError(f"the object in image {path} is only {w}x{h} px (the picture is {rgba.shape[1]} px wide "
                         f"padded); it needs at least {min_object_px} px across: give a larger picture (256 px or more)")
    area = float(inside.mean())
    if area < min_mask_area:
        raise InputError(f"the object in image {path} covers only {100 * area:.2f}% of the picture (at least "
                         f"{100 * min_mask_area:.1f}% needed); crop the picture around the object")


def load_reference(image: Union[str, Path], mask: Union[str, Path, None] = None,
                   depth: Union[str, Path, None] = None, check: bool = False) -> ReferenceImage:
    """Load the input picture (and optional mask / depth) as a padded square.

    Args:
        image: RGBA, or RGB (+ ``mask``) picture; any PIL-readable format.
        mask: optional grey/binary mask of the same size (white = object); overrides the image's alpha.
        depth: optional depth.png (MiDaS disparity as 8/16-bit grey). Padded like the image when it has the image's
            (unpadded) size, used as is when already square.
        check: Reject pictures without a usable object (:func:`check_object`); the generation phases set it.

    Raises:
        InputError: missing/corrupt files, inconsistent sizes, or (``check``) an empty / tiny object.
    """
    path = Path(image)
    im = open_image(path)
    m = open_image(mask, "mask") if mask is not None else None
    rgba = pad_to_square(_to_rgba(im, m, path))
    if check:
        check_object(rgba, path)
    ref = ReferenceImage(rgba=torch.from_numpy(rgba).permute(2, 0, 1).contiguous(), path=str(path))
    if depth is not None:
        dim = open_image(depth, "depth map")
        arr = np.asarray(dim.convert("I") if dim.mode in ("I", "I;16", "I;16B") else dim.convert("L"), dtype=np.float32)
        arr = arr / (65535.0 if arr.max() > 255 else 255.0)
        if arr.shape != rgba.shape[:2]:
            if arr.shape == (im.size[1], im.size[0]):
                arr = pad_to_square(arr[..., None])[..., 0]
            elif arr.shape[0] != arr.shape[1]:
                raise InputError(f"depth map {depth} size {arr.shape[::-1]} matches neither the image nor a square; "
                                 f"re-run `python -m animate124.preprocess image={image}`")
        ref.disparity = torch.from_numpy(np.ascontiguousarray(arr))[None]
    return ref


def sibling_depth(image: Union[str, Path]) -> Optional[Path]:
    """``depth.png`` next to ``image`` (the layout written by ``animate124.preprocess`` and the benchmark), or None."""
    p = Path(image).with_name("depth.png")
    return p if p.is_file() and p.resolve() != Path(image).resolve() else None
