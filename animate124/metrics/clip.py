"""CLIP metrics: CLIP-T, R-precision, CLIP-I, temporal consistency (spec §11.2; protocol in docs/metrics.md).

The model is a transformers ``CLIPModel`` + ``CLIPTokenizer`` loaded through ``guidance.models.load`` (hub id or local
dir; ``models=tiny`` builds a tiny random CLIP of the same classes, saved and loaded back). No CLIPProcessor: images
are preprocessed here as CLIP does (shorter side resized to the model's input size with bicubic antialiasing, centre
crop, CLIP mean/std), which needs no torchvision. Embeddings are L2-normalised, so every score is a cosine in [−1, 1]
(multiply by 100 for CLIPScore-style numbers).

Example:
    >>> clip = load_clip("openai/clip-vit-large-patch14")
    >>> img = clip.embed_images(frames)            # [N, D], frames [N, 3, H, W] in [0, 1]
    >>> txt = clip.embed_texts(["a panda is dancing"])
    >>> clip_t(img, txt[0])
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from animate124.config.schema import ModelsConfig, ModelsKind
from animate124.guidance.base import CLIP_MEAN, CLIP_STD

DEFAULT_CLIP = "openai/clip-vit-large-patch14"


# --------------------------------------------------------------------------------------------------- model
def tiny_clip() -> nn.Module:
    """A tiny random ``CLIPModel`` (2 layers, width 32, 224² / patch 32) matching ``guidance.models.tiny_tokenizer``."""
    from transformers import CLIPConfig, CLIPModel

    text = dict(vocab_size=514, hidden_size=32, intermediate_size=37, num_attention_heads=4, num_hidden_layers=2,
                max_position_embeddings=77, bos_token_id=512, eos_token_id=513, pad_token_id=513)
    vision = dict(hidden_size=32, intermediate_size=37, num_attention_heads=4, num_hidden_layers=2, image_size=224,
                  patch_size=32)
    return CLIPModel(CLIPConfig(text_config=text, vision_config=vision, projection_dim=32))


def random_clip_large() -> nn.Module:
    """CLIP ViT-L/14 (the default metric model's architecture) with random weights (``models=random``)."""
    from transformers import CLIPConfig, CLIPModel

    text = dict(vocab_size=49408, hidden_size=768, intermediate_size=3072, num_attention_heads=12,
                num_hidden_layers=12, max_position_embeddings=77, bos_token_id=49406, eos_token_id=49407,
                pad_token_id=49407)
    vision = dict(hidden_size=1024, intermediate_size=4096, num_attention_heads=16, num_hidden_layers=24,
                  image_size=224, patch_size=14)
    return CLIPModel(CLIPConfig(text_config=text, vision_config=vision, projection_dim=768))


@dataclass
class Clip:
    """A loaded CLIP model with embedding helpers."""

    model: Any  # transformers CLIPModel (its config and submodules are read by name)
    """transformers CLIPModel (eval, fp32)."""
    tokenizer: Any
    """CLIPTokenizer."""
    name: str
    """Hub id or local dir (reported in metrics.json)."""
    batch_size: int = 16

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def image_size(self) -> int:
        return int(self.model.config.vision_config.image_size)

    @torch.no_grad()
    def embed_images(self, images: Tensor) -> Tensor:
        """[N, 3, H, W] in [0, 1] → [N, D] unit image embeddings (batched)."""
        out = []
        for s in range(0, images.shape[0], self.batch_size):
            px = preprocess(images[s: s + self.batch_size].to(self.device, torch.float32), self.image_size)
            pooled = self.model.vision_model(pixel_values=px).pooler_output
            out.append(F.normalize(self.model.visual_projection(pooled).float(), dim=-1).cpu())
        return torch.cat(out) if out else torch.zeros(0, int(self.model.config.projection_dim))

    @torch.no_grad()
    def embed_texts(self, texts: Sequence[str]) -> Tensor:
        """Captions → [N, D] unit text embeddings (padded / truncated to 77 tokens)."""
        tok = self.tokenizer(list(texts), padding="max_length", truncation=True, max_length=77, return_tensors="pt")
        ids, mask = tok["input_ids"].to(self.device), tok["attention_mask"].to(self.device)
        pooled = self.model.text_model(input_ids=ids, attention_mask=mask).pooler_output
        return F.normalize(self.model.text_projection(pooled).float(), dim=-1).cpu()


def preprocess(images: Tensor, size: int = 224) -> Tensor:
    """CLIP preprocessing of [N, 3, H, W] in [0, 1]: shorter side → ``size`` (bicubic, antialias), centre crop,
    clamp to [0, 1], normalise with the CLIP mean / std."""
    h, w = images.shape[-2:]
    if min(h, w) != size:
        scale = size / min(h, w)
        nh, nw = max(size, round(h * scale)), max(size, round(w * scale))
        images = F.interpolate(images, size=(nh, nw), mode="bicubic", antialias=True, align_corners=False)
    h, w = images.shape[-2:]
    top, left = (h - size) // 2, (w - size) // 2
    images = images[..., top: top + size, left: left + size].clamp(0.0, 1.0)
    mean = torch.tensor(CLIP_MEAN, device=images.device, dtype=images.dtype).view(1, 3, 1, 1)
    std = torch.tensor(CLIP_STD, device=images.device, dtype=images.dtype).view(1, 3, 1, 1)
    return (images - mean) / std


def load_clip(
    spec: str = DEFAULT_CLIP,
    models_cfg: ModelsConfig | None = None,
    device: str | torch.device = "cpu",
    batch_size: int = 16,
) -> Clip:
    """Load CLIP through ``guidance.models.load`` (fp32: metrics are not run in half precision).

    With ``models.kind=tiny`` the tiny model and tokenizer are cached in ``model/`` and ``tokenizer/`` subfolders of
    the tiny cache entry of ``spec``; with ``pretrained`` the hub layout (flat) is used.

    Raises:
        MissingWeightsError: the model is not available locally (offline) — the message names the fix.
    """
    from transformers import CLIPModel, CLIPTokenizer

    from animate124.guidance.models import load, tiny_tokenizer

    models_cfg = models_cfg or ModelsConfig()
    tiny = ModelsKind(models_cfg.kind) == ModelsKind.tiny
    model = load(CLIPModel, spec, subfolder="model" if tiny else None, dtype="float32", models_cfg=models_cfg,
                 tiny_builder=tiny_clip, random_builder=random_clip_large, device=device)
    tokenizer = load(CLIPTokenizer, spec, subfolder="tokenizer" if tiny else None, models_cfg=models_cfg,
                     tiny_builder=tiny_tokenizer, random_builder=tiny_tokenizer)
    return Clip(model, tokenizer, spec, batch_size)


# --------------------------------------------------------------------------------------------------- metrics
def clip_t(image_emb: Tensor, text_emb: Tensor) -> float:
    """CLIP-T: mean cos(image, caption) over all images. image_emb [..., D] unit, text_emb [D] unit."""
    return float((image_emb.reshape(-1, image_emb.shape[-1]) @ text_emb).mean())


def r_precision(image_emb: Tensor, caption_emb: Tensor, true_index: int) -> float:
    """R@1: fraction of images whose most similar caption (of C candidates) is the true one.

    Args:
        image_emb: [..., D] unit image embeddings.
        caption_emb: [C, D] unit embeddings of all candidate captions (C ≥ 2).
        true_index: row of the item's own caption.
    """
    sims = image_emb.reshape(-1, image_emb.shape[-1]) @ caption_emb.T  # [M, C]
    return float((sims.argmax(dim=-1) == true_index).float().mean())


def clip_i(image_emb: Tensor, ref_emb: Tensor) -> float:
    """CLIP-I: mean cos(image, reference image) over all given images. image_emb [..., D], ref_emb [D]."""
    return float((image_emb.reshape(-1, image_emb.shape[-1]) @ ref_emb).mean())


def temporal_consistency(video_emb: Tensor) -> float | None:
    """Mean cos of consecutive frames of fixed-view videos. video_emb [V, F, D] unit (None when F < 2)."""
    if video_emb.shape[1] < 2:
        return None
    return float((video_emb[:, 1:] * video_emb[:, :-1]).sum(-1).mean())
