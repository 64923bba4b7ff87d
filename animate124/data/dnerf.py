"""Reader of multi-view video datasets in the D-NeRF layout.

```
<root>/transforms_{train,val,test}.json   {"camera_angle_x": rad, "frames": [{"file_path": "./train/r_000",
                                            "transform_matrix": 4x4 c2w (OpenGL/Blender), "time": τ in [0,1]}, ...]}
<root>/train/r_000.png ...                 RGBA (or RGB) images; file_path may omit the .png extension
```
Cameras are camera-to-world in the OpenGL/Blender convention (looks down −z, +y up), the project's convention
(DESIGN.md §5), so nothing is converted. Optional per-file ``w``/``h`` keys are ignored: the images give the size.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from animate124.errors import InputError

SPLITS = ("train", "val", "test")


@dataclass
class DNeRFSplit:
    """One split of a D-NeRF dataset, fully loaded (float32, CPU)."""

    images: Tensor
    """[N, H, W, 3] colours composited on white, in [0, 1]."""
    alphas: Tensor
    """[N, H, W, 1] ground-truth alpha (ones for RGB images)."""
    c2w: Tensor
    """[N, 4, 4] camera-to-world matrices (OpenGL convention), positions multiplied by the dataset scale."""
    times: Tensor
    """[N] scene time τ in [0, 1]."""
    fovx: float
    """Horizontal field of view in radians (camera_angle_x)."""
    height: int
    width: int

    @property
    def focal(self) -> float:
        """Focal length in pixels: 0.5·W / tan(fovx / 2)."""
        return 0.5 * self.width / math.tan(0.5 * self.fovx)

    @property
    def fovy(self) -> float:
        """Vertical field of view in radians (square pixels)."""
        return 2.0 * math.atan(0.5 * self.height / self.focal)

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def composite(self, background: Tensor, index: Tensor | None = None) -> Tensor:
        """Colours composited on ``background`` instead of white.

        With premultiplied colour P, the stored white composite is W = P + (1 − α), so on a background b the colour
        is P + b(1 − α) = W + (b − 1)(1 − α).

        Args:
            background: [..., 3] colours broadcastable to the selected pixels.
            index: Optional index into the flattened [N·H·W] pixels (then the result is [len(index), 3]).
        """
        rgb = self.images.reshape(-1, 3) if index is not None else self.images
        alpha = self.alphas.reshape(-1, 1) if index is not None else self.alphas
        if index is not None:
            rgb, alpha = rgb[index], alpha[index]
        return rgb + (background - 1.0) * (1.0 - alpha)


def _fix(root: Path) -> str:
    return ("point data.path at a folder with transforms_{train,test}.json "
            f"(e.g. python -m animate124.data.synthetic out={root})")


def _read_transforms(root: Path, split: str) -> dict:
    path = root / f"transforms_{split}.json"
    if not path.is_file():
        raise InputError(f"{path} not found; {_fix(root)}")
    try:
        meta = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise InputError(f"{path} is not valid JSON ({exc}); fix or regenerate the file") from exc
    if not isinstance(meta, dict) or "camera_angle_x" not in meta:
        raise InputError(f"{path} has no camera_angle_x; add the horizontal field of view in radians")
    frames = meta.get("frames")
    if not isinstance(frames, list) or not frames:
        raise InputError(f"{path} has no frames; add a 'frames' list with file_path, transform_matrix and time")
    return meta


def _image_path(root: Path, file_path: str) -> Path:
    path = root / file_path
    if path.suffix.lower() in (".png", ".jpg", ".jpeg") and path.is_file():
        return path
    for ext in (".png", ".jpg", ".jpeg"):
        cand = path.with_name(path.name + ext)
        if cand.is_file():
            return cand
    raise InputError(f"image {path} (from file_path '{file_path}') not found under {root}; restore or regenerate it")


def _load_rgba(path: Path) -> np.ndarray:
    try:
        img = iio.imread(path)
    except Exception as exc:  # noqa: BLE001 - imageio raises many types for unreadable files
        raise InputError(f"cannot read image {path} ({type(exc).__name__}); replace it with a valid PNG") from exc
    img = np.asarray(img)
    if img.ndim == 2:
        img = np.repeat(img[..., None], 3, axis=-1)
    scale = 65535.0 if img.dtype == np.uint16 else 255.0
    img = img.astype(np.float32) / scale
    if img.shape[-1] == 3:
        img = np.concatenate([img, np.ones_like(img[..., :1])], axis=-1)
    return img[..., :4]


def load_dnerf(root: str | Path, split: str = "train", downscale: int = 1, scale: float = 1.0) -> DNeRFSplit:
    """Load one split of a D-NeRF-layout folder.

    Args:
        root: Dataset folder.
        split: train | val | test.
        downscale: Integer factor; images are area-averaged (premultiplied colour and alpha).
        scale: Camera positions are multiplied by this (to bring a scene into the [-1, 1]³ box).

    Returns:
        The split with colours composited on white.

    Raises:
        InputError: Missing folder, JSON or images, bad JSON, no frames, inconsistent image sizes.
    """
    root = Path(root)
    if not root.is_dir():
        raise InputError(f"dataset folder {root} not found; {_fix(root)}")
    if split not in SPLITS:
        raise InputError(f"unknown split '{split}'; use one of {', '.join(SPLITS)}")
    if downscale < 1:
        raise InputError(f"data.downscale must be >= 1 (got {downscale})")
    meta = _read_transforms(root, split)
    images, alphas, c2ws, times = [], [], [], []
    for i, frame in enumerate(meta["frames"]):
        try:
            file_path = frame["file_path"]
            c2w = torch.tensor(frame["transform_matrix"], dtype=torch.float32)
        except (KeyError, TypeError, ValueError) as exc:
            raise InputError(f"frame {i} of transforms_{split}.json in {root} lacks a valid file_path/transform_matrix"
                             "; fix the file") from exc
        if c2w.shape != (4, 4):
            raise InputError(f"frame {i} of transforms_{split}.json in {root}: transform_matrix must be 4x4")
        rgba = torch.from_numpy(_load_rgba(_image_path(root, file_path)))
        if images and rgba.shape[:2] != images[0].shape[:2]:
            raise InputError(f"image {file_path} in {root} is {tuple(rgba.shape[:2])}, others are "
                             f"{tuple(images[0].shape[:2])}; all frames must have the same size")
        images.append(rgba[..., :3] * rgba[..., 3:])  # premultiplied
        alphas.append(rgba[..., 3:])
        c2w[:3, 3] *= scale
        c2ws.append(c2w)
        times.append(float(frame.get("time", 0.0)))
    premult, alpha = torch.stack(images), torch.stack(alphas)
    if downscale > 1:
        premult = F.avg_pool2d(premult.permute(0, 3, 1, 2), downscale).permute(0, 2, 3, 1)
        alpha = F.avg_pool2d(alpha.permute(0, 3, 1, 2), downscale).permute(0, 2, 3, 1)
    return DNeRFSplit(
        images=(premult + (1.0 - alpha)).clamp(0.0, 1.0).contiguous(),
        alphas=alpha.contiguous(),
        c2w=torch.stack(c2ws),
        times=torch.tensor(times, dtype=torch.float32),
        fovx=float(meta["camera_angle_x"]),
        height=int(premult.shape[1]),
        width=int(premult.shape[2]),
    )
