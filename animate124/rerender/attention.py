"""Extended self-attention across keyframes, as a diffusers attention processor (I2V3D §3.2, after Tune-A-Video /
Text2Video-Zero's ``CrossFrameAttnProcessor``).

The keyframes of one img2img pass are a batch ``[G·F, N, C]`` (G = classifier-free-guidance groups, F keyframes, N
tokens). In every UNet self-attention layer (``attn1``) each keyframe's queries attend to its own keys/values plus
those of the anchor keyframe (``mode=anchor``) or of all keyframes (``mode=all``), so appearance is shared across
views. Cross-attention layers and the ControlNet keep their processors.

With one keyframe both modes equal the default ``AttnProcessor2_0`` (``all``: the same keys; ``anchor``: the keys
duplicated, which leaves softmax-weighted sums unchanged) — tests/test_rerender.py checks this on a tiny UNet.

Example:
    >>> restore = set_extended_attention(unet, frames=5, mode="anchor")
    >>> ...  # run the UNet on [2·5, 4, h, w]
    >>> unet.set_attn_processor(restore)
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

MODES = ("anchor", "all")


class ExtendedSelfAttnProcessor:
    """Self-attention whose keys/values are extended by those of the anchor keyframe or of all keyframes.

    Args:
        frames: F, keyframes per CFG group (the batch must be a multiple of F).
        mode: ``anchor`` (own + anchor frame) or ``all`` (every keyframe's tokens).
        anchor: index of the anchor keyframe within a group.
    """

    def __init__(self, frames: int, mode: str = "anchor", anchor: int = 0) -> None:
        if mode not in MODES:
            raise ValueError(f"extended attention mode {mode!r} is not one of {MODES}")
        if frames < 1 or not 0 <= anchor < frames:
            raise ValueError(f"need frames >= 1 and 0 <= anchor < frames (got {frames}, {anchor})")
        self.frames, self.mode, self.anchor = int(frames), mode, int(anchor)

    def _extend(self, x: Tensor) -> Tensor:
        """[G·F, heads, N, d] keys or values → [G·F, heads, L, d] (L = 2N for anchor, F·N for all)."""
        bf, h, n, d = x.shape
        f = self.frames
        g = x.view(bf // f, f, h, n, d)
        if self.mode == "anchor":
            ref = g[:, self.anchor : self.anchor + 1].expand(-1, f, -1, -1, -1)
            return torch.cat([g, ref], dim=3).reshape(bf, h, 2 * n, d)
        every = g.permute(0, 2, 1, 3, 4).reshape(bf // f, 1, h, f * n, d).expand(-1, f, -1, -1, -1)
        return every.reshape(bf, h, f * n, d)

    def __call__(self, attn: Any, hidden_states: Tensor, encoder_hidden_states: Tensor | None = None,
                 attention_mask: Tensor | None = None, temb: Tensor | None = None, **kwargs: Any) -> Tensor:
        if encoder_hidden_states is not None or attention_mask is not None or attn.spatial_norm is not None \
                or attn.group_norm is not None or hidden_states.ndim != 3:
            raise ValueError("ExtendedSelfAttnProcessor is for plain self-attention (attn1) layers only")
        b, _, _ = hidden_states.shape
        if b % self.frames:
            raise ValueError(f"batch {b} is not a multiple of the {self.frames} keyframes")
        residual = hidden_states
        query, key, value = attn.to_q(hidden_states), attn.to_k(hidden_states), attn.to_v(hidden_states)
        head_dim = key.shape[-1] // attn.heads
        query, key, value = (x.view(b, -1, attn.heads, head_dim).transpose(1, 2) for x in (query, key, value))
        if attn.norm_q is not None:
            query = attn.norm_q(query)
        if attn.norm_k is not None:
            key = attn.norm_k(key)
        out = F.scaled_dot_product_attention(query, self._extend(key), self._extend(value), dropout_p=0.0,
                                             is_causal=False)
        out = out.transpose(1, 2).reshape(b, -1, attn.heads * head_dim).to(query.dtype)
        out = attn.to_out[1](attn.to_out[0](out))
        if attn.residual_connection:
            out = out + residual
        return out / attn.rescale_output_factor


def set_extended_attention(unet: nn.Module, frames: int, mode: str = "anchor", anchor: int = 0) -> dict[str, Any]:
    """Install :class:`ExtendedSelfAttnProcessor` on every ``attn1`` (self-attention) layer of ``unet``.

    Returns:
        The previous processors (``unet.set_attn_processor(previous)`` restores them).
    """
    previous = dict(unet.attn_processors)
    proc = ExtendedSelfAttnProcessor(frames, mode, anchor)
    unet.set_attn_processor({name: (proc if name.endswith("attn1.processor") else p) for name, p in previous.items()})
    return previous
