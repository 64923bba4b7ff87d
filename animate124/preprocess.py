"""``python -m animate124.preprocess image=PATH [depth_model=ID|DIR] [out_dir=DIR] [device=cpu] [no_depth=true]``.

Makes the two files the generation phases read (spec §2), next to the image unless ``out_dir`` is given:

- ``rgba.png``: the picture with its background removed. An image that already has an alpha channel is kept;
  otherwise the optional ``rembg`` package removes the background (``pip install rembg``). Without it an
  :class:`InputError` asks for an RGBA image.
- ``depth.png``: monocular disparity from a transformers depth-estimation model (default ``Intel/dpt-hybrid-midas``;
  any ``AutoModelForDepthEstimation`` hub id or local dir) run on the original RGB (with background), bicubically
  resized to the image size, normalised to [0, 1] inside the mask (``alpha > 0``), 0 outside, stored as uint8.
  The original used MiDaS v3.1 DPT-BEiT-L-512; the DPT-hybrid MiDaS in transformers plays the same role.

Both are centre-padded to a square (no re-centring, like the original). Offline without the model →
MissingWeightsError naming the id.
"""

from __future__ import annotations

import importlib.util
import logging
import sys
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from animate124.config.schema import ModelsConfig
from animate124.data.reference import open_image, pad_to_square
from animate124.errors import Animate124Error, InputError

log = logging.getLogger(__name__)

DEFAULT_DEPTH_MODEL = "Intel/dpt-hybrid-midas"
KEYS = ("image", "depth_model", "out_dir", "device", "no_depth")


def remove_background(im: Image.Image, path: Path) -> Image.Image:
    """RGBA image: kept when it already has alpha, else ``rembg.remove`` (optional dependency)."""
    if im.mode in ("RGBA", "LA") or (im.mode == "P" and "transparency" in im.info):
        return im.convert("RGBA")
    if importlib.util.find_spec("rembg") is None:
        raise InputError(f"{path} has no alpha channel and background removal needs the optional `rembg` package; "
                         f"`pip install rembg`, or give an RGBA image with the background removed")
    import rembg  # pyright: ignore[reportMissingImports]  # optional dependency (preprocess extra)

    return rembg.remove(im.convert("RGB")).convert("RGBA")


def estimate_disparity(rgb: Image.Image, model_id: str, device: str = "cpu",
                       models_cfg: Optional[ModelsConfig] = None) -> np.ndarray:
    """Disparity (larger = closer) of ``rgb`` at its own size, [H, W] float32 (un-normalised)."""
    from transformers import AutoImageProcessor, AutoModelForDepthEstimation

    from animate124.guidance.models import load

    model = load(AutoModelForDepthEstimation, model_id, None, "float32", models_cfg, device=device)
    processor = load(AutoImageProcessor, model_id, None, "float32", models_cfg)
    inputs = processor(images=rgb.convert("RGB"), return_tensors="pt").to(device)
    with torch.no_grad():
        pred = model(**inputs).predicted_depth  # [1, h, w]
    pred = F.interpolate(pred[:, None].float(), size=(rgb.size[1], rgb.size[0]), mode="bicubic", align_corners=False)
    return pred[0, 0].cpu().numpy()


def normalise_in_mask(disp: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """``(d − min)/(max − min + 1e-9)`` over ``alpha > 0``, 0 elsewhere (spec §2 step 3), [H, W] in [0, 1]."""
    m = alpha > 0
    out = np.zeros_like(disp, dtype=np.float32)
    if m.any():
        lo, hi = float(disp[m].min()), float(disp[m].max())
        out[m] = (disp[m] - lo) / (hi - lo + 1e-9)
    return out.clip(0.0, 1.0)


def preprocess(image: str, out_dir: Optional[str] = None, depth_model: Optional[str] = DEFAULT_DEPTH_MODEL,
               device: str = "cpu", models_cfg: Optional[ModelsConfig] = None) -> dict[str, Path]:
    """Write ``rgba.png`` (and ``depth.png`` unless ``depth_model`` is None); returns their paths."""
    path = Path(image)
    im = open_image(path)
    rgba = remove_background(im, path)
    out = Path(out_dir) if out_dir else path.parent
    out.mkdir(parents=True, exist_ok=True)
    arr = np.asarray(rgba, dtype=np.uint8)
    written = {"rgba": out / "rgba.png"}
    if written["rgba"].resolve() == path.resolve():
        log.info("%s is already the RGBA output; not overwriting it", path)
    else:
        Image.fromarray(pad_to_square(arr)).save(written["rgba"])
    if depth_model:
        disp = estimate_disparity(im.convert("RGB"), depth_model, device, models_cfg)
        depth = normalise_in_mask(disp, arr[..., 3].astype(np.float32) / 255.0)
        depth8 = (depth * 255.0).round().astype(np.uint8)
        written["depth"] = out / "depth.png"
        Image.fromarray(pad_to_square(depth8[..., None])[..., 0]).save(written["depth"])
    return written


def parse_args(argv: Sequence[str]) -> dict[str, str]:
    """``key=value`` arguments (Hydra-style) → dict; unknown keys are an InputError."""
    args: dict[str, str] = {}
    for a in argv:
        key, sep, value = a.partition("=")
        if not sep or key not in KEYS:
            raise InputError(f"unknown argument {a!r}; use key=value with key in {', '.join(KEYS)}")
        args[key] = value
    if "image" not in args:
        raise InputError("missing image=PATH; e.g. python -m animate124.preprocess image=cat.jpg")
    return args


def main(argv: Optional[Sequence[str]] = None) -> int:
    """CLI entry; returns the exit code (2 on user errors, with a one-line message)."""
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        args = parse_args(sys.argv[1:] if argv is None else argv)
        no_depth = args.get("no_depth", "false").lower() in ("1", "true", "yes")
        written = preprocess(args["image"], args.get("out_dir"), None if no_depth else
                             args.get("depth_model", DEFAULT_DEPTH_MODEL), args.get("device", "cpu"))
    except Animate124Error as e:
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code
    for name, p in written.items():
        print(f"{name}: {p}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
