"""In-betweens: SVD (loaded through guidance/image_video.py) between consecutive keyframes, bidirectionally fused and
guided by the coarse render (rerender/sampling.py::inbetween)."""

from __future__ import annotations

from typing import Any, Optional

import torch
from torch import Tensor

from animate124.config.guidance import ImageVideoGuidanceConfig
from animate124.config.rerender import InbetweenConfig
from animate124.config.schema import ModelsConfig
from animate124.guidance.base import TermInputs
from animate124.guidance.image_video import ImageVideoGuidance, SVDCondition
from animate124.rerender.sampling import EpsFn, InbetweenOptions, inbetween


class KeyedSVD:
    """SVD ε-predictors conditioned on a chosen keyframe.

    One ``ImageVideoGuidance`` (built on ``reference``, the first keyframe, with its image encoder kept on the device)
    gives the conditioning of each keyframe, computed once with :meth:`ImageVideoGuidance.condition` and passed to
    its ``predict_eps``; the term itself is never changed. Key 0 is ``reference`` (the term's own conditioning).
    """

    def __init__(self, cfg: InbetweenConfig, models_cfg: ModelsConfig, size: tuple[int, int],
                 device: torch.device, reference: Tensor) -> None:
        gcfg = ImageVideoGuidanceConfig(model=cfg.model, cfg_scale=cfg.cfg_scale, height=size[0], width=size[1],
                                        fps=cfg.fps, motion_bucket_id=cfg.motion_bucket_id,
                                        noise_aug_strength=cfg.noise_aug_strength)
        inputs = TermInputs(device=device, models_cfg=models_cfg, reference=reference, keep_image_encoder=True)
        self.term = ImageVideoGuidance(gcfg, inputs)
        self._conds: dict[int, SVDCondition] = {0: self.term.reference}

    @property
    def alphas_cumprod(self) -> Tensor:
        return self.term.alphas_cumprod

    def condition(self, key: int, image: Tensor) -> None:
        """Compute (once) the conditioning of keyframe ``key`` from its image [3, H, W] in [0, 1]."""
        if key not in self._conds:
            self._conds[key] = self.term.condition(image)

    def eps_fn(self, key: int) -> EpsFn:
        """ε̂(z [F, 4, h, w], t) conditioned on keyframe ``key``."""
        cond = self._conds[key]

        def eps(z: Tensor, t: int) -> Tensor:
            tt = torch.full((1,), t, device=z.device, dtype=torch.long)
            return self.term.predict_eps(z[None], tt, cond)[0]

        return eps

    def encode(self, images: Tensor, generator: Optional[torch.Generator] = None) -> Tensor:
        """[F, 3, H, W] in [0, 1] → scaled latents [F, 4, h, w]."""
        with torch.no_grad():
            return self.term.encode_frames(images[None].to(self.term.device), generator=generator)[0]

    def decode(self, z: Tensor) -> Tensor:
        """[F, 4, h, w] → [F, 3, H, W] in [0, 1] (the temporal decoder sees the whole segment)."""
        vae: Any = self.term.vae  # diffusers AutoencoderKLTemporalDecoder
        dtype = next(vae.parameters()).dtype
        with torch.no_grad():
            x = vae.decode((z / vae.config.scaling_factor).to(dtype), num_frames=z.shape[0]).sample.float()
        return ((x + 1.0) / 2.0).clamp(0.0, 1.0)


def options(cfg: InbetweenConfig, num_train: int) -> InbetweenOptions:
    return InbetweenOptions(strength=cfg.strength, steps=cfg.steps, bidirectional=cfg.bidirectional,
                            blend=cfg.blend, blend_below=round(cfg.blend_below * (num_train - 1)))


def run_inbetweens(svd: KeyedSVD, cfg: InbetweenConfig, coarse: Tensor, keyframes: Tensor, keys: list[int],
                   generator: torch.Generator) -> Tensor:
    """All frames: keyframes as given, each segment between keyframes filled by :func:`sampling.inbetween`.

    Args:
        svd: the SVD predictors.
        cfg: in-between settings.
        coarse: [N, 3, H, W] coarse renders in [0, 1].
        keyframes: [K, 3, H, W] keyframe images (at frames ``keys``).
        keys: frame index of each keyframe (sorted, first 0, last N−1).
        generator: CPU RNG.

    Returns:
        [N, 3, H, W] in [0, 1]; the keyframe frames are exactly ``keyframes``.
    """
    out = coarse.clone()
    out[keys] = keyframes
    opts = options(cfg, len(svd.alphas_cumprod))
    for j, (a, b) in enumerate(zip(keys[:-1], keys[1:])):
        if b - a < 2:
            continue
        svd.condition(j, keyframes[j])
        svd.condition(j + 1, keyframes[j + 1])
        seg = torch.cat([keyframes[j : j + 1], coarse[a + 1 : b], keyframes[j + 1 : j + 2]])
        z = svd.encode(seg, generator)
        noise = torch.randn(z.shape, generator=generator).to(z)
        with torch.no_grad():
            zs = inbetween(z, z[0], z[-1], svd.eps_fn(j), svd.eps_fn(j + 1), svd.alphas_cumprod, opts, noise)
        out[a + 1 : b] = svd.decode(zs)[1:-1].cpu()
    return out
