"""Textual inversion of SD-1.5 (spec §3): learn one token embedding from the input picture.

The original is diffusers' textual-inversion example with Magic123's heavy augmentations. Differences on purpose:

* pixels reach the VAE in [-1, 1] (the original's augmented path fed [0, 1]; spec §14.10);
* augmentations are kornia ops on batched tensors (no torchvision); the non-rotated branch resizes 640 → 512 before
  the random resized crop instead of cropping the 640 image (same content, one tensor size per batch);
* only the new row is trained: it is a separate parameter injected into the frozen embedding's output
  (:class:`TokenEmbedding`), so every other row stays bit-identical (the original reset them after each step) and
  checkpoints hold one row instead of the 49k×768 matrix + its Adam state.

File formats: ``learned_embeds.bin`` = ``torch.save({token: tensor[768]})`` (diffusers' format, what the benchmark
ships; read with ``torch.load(..., weights_only=True)``) and ``learned_embeds.safetensors`` with the same single key.
Both load through diffusers' ``pipe.load_textual_inversion(path)``.

Example:
    >>> ti = TextualInversion(tokenizer, text_encoder, vae, unet, scheduler, image, "_panda_", "panda")
    >>> for step in range(3000):
    ...     stats = ti.step()
    >>> save_learned_embeds("learned_embeds.safetensors", {"_panda_": ti.embedding()})
"""

from __future__ import annotations

import math
import pickle
import random
from pathlib import Path
from typing import Optional

import kornia.augmentation as K
import torch
import torch.nn.functional as F
from kornia.geometry.transform import center_crop, resize
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from animate124.errors import InputError
from animate124.guidance.base import vae_encode

# diffusers examples/textual_inversion: imagenet_templates_small (learnable_property=object).
OBJECT_TEMPLATES = (
    "a photo of a {}", "a rendering of a {}", "a cropped photo of the {}", "the photo of a {}",
    "a photo of a clean {}", "a photo of a dirty {}", "a dark photo of the {}", "a photo of my {}",
    "a photo of the cool {}", "a close-up photo of a {}", "a bright photo of the {}", "a cropped photo of a {}",
    "a photo of the {}", "a good photo of the {}", "a photo of one {}", "a close-up photo of the {}",
    "a rendition of the {}", "a photo of the clean {}", "a rendition of a {}", "a photo of a nice {}",
    "a good photo of a {}", "a photo of the nice {}", "a photo of the small {}", "a photo of the weird {}",
    "a photo of the large {}", "a photo of a cool {}", "a photo of a small {}",
)


# ----------------------------------------------------------------------------------------------------------- files


def load_learned_embeds(path: str | Path) -> dict[str, Tensor]:
    """Read ``{token: tensor[D]}`` from a diffusers ``.bin`` (safe ``weights_only`` load) or a ``.safetensors`` file.

    Raises:
        InputError: missing/corrupt file, or content that is not ``{str: 1-D tensor}``.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"learned embeddings {path} not found; run phase=textual_inversion or fix the path")
    try:
        if path.suffix == ".safetensors":
            data = load_file(str(path))
        else:
            data = torch.load(str(path), map_location="cpu", weights_only=True)
    except (OSError, RuntimeError, SafetensorError, ValueError, pickle.UnpicklingError, EOFError) as exc:
        raise InputError(f"cannot read learned embeddings {path} ({exc}); re-run phase=textual_inversion") from exc
    if not isinstance(data, dict) or not data:
        raise InputError(f"{path} must hold {{token: tensor}}; re-run phase=textual_inversion")
    out = {}
    for k, v in data.items():
        if not isinstance(k, str) or not isinstance(v, Tensor) or v.squeeze().dim() != 1:
            raise InputError(f"{path}: entry {k!r} is not a token → 1-D embedding; re-run phase=textual_inversion")
        out[k] = v.detach().reshape(-1).float().cpu()
    return out


def save_learned_embeds(path: str | Path, embeds: dict[str, Tensor]) -> Path:
    """Write ``{token: tensor[D]}`` as ``.safetensors`` or (any other suffix) the diffusers ``.bin`` format."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = {k: v.detach().float().cpu().contiguous().reshape(-1) for k, v in embeds.items()}
    tmp = path.with_name(f".{path.name}.tmp")
    if path.suffix == ".safetensors":
        save_file(data, str(tmp))
    else:
        torch.save(data, str(tmp))
    tmp.replace(path)
    return path


# ------------------------------------------------------------------------------------------------ tokenizer surgery


def add_token(tokenizer, text_encoder: nn.Module, token: str, init: Tensor | str) -> int:
    """Add ``token`` to the tokenizer and a row to the text encoder's input embedding.

    Args:
        tokenizer: a transformers CLIP tokenizer.
        text_encoder: a transformers ``CLIPTextModel``.
        token: the placeholder, e.g. ``_panda_dance_``; if it exists already its row is overwritten.
        init: the row's value ([D] tensor), or an initializer word whose (mean) token embedding is copied.

    Returns:
        The token id.

    Raises:
        InputError: embedding width mismatch (e.g. a 768-d token into a 1024-d encoder) or an empty initializer.
    """
    emb = text_encoder.get_input_embeddings()
    if isinstance(init, str):
        ids = tokenizer.encode(init, add_special_tokens=False)
        if not ids:
            raise InputError(f"initializer token {init!r} encodes to nothing; pass a word like 'panda'")
        value = emb.weight.detach()[ids].float().mean(0)
    else:
        value = init.detach().reshape(-1).float()
    if value.numel() != emb.weight.shape[1]:
        raise InputError(
            f"token {token!r} has a {value.numel()}-d embedding but the text encoder expects "
            f"{emb.weight.shape[1]}-d; use an embedding learned for this model (SD-1.5: 768-d)"
        )
    tokenizer.add_tokens([token])
    token_id = tokenizer.convert_tokens_to_ids(token)
    if token_id >= emb.weight.shape[0]:
        text_encoder.resize_token_embeddings(len(tokenizer), mean_resizing=False)
        emb = text_encoder.get_input_embeddings()
    with torch.no_grad():
        emb.weight[token_id] = value.to(emb.weight)
    return token_id


def load_token(tokenizer, text_encoder: nn.Module, path: str | Path) -> str:
    """Add the (single) token of a learned-embeddings file to tokenizer + text encoder; returns the token name."""
    embeds = load_learned_embeds(path)
    for token, value in embeds.items():
        add_token(tokenizer, text_encoder, token, value)
    return next(iter(embeds))


# --------------------------------------------------------------------------------------------------- augmentations


class TIAugment(nn.Module):
    """The original's augmentation chain (spec §3) on a batch of [B, 3, S, S] images in [0, 1] (S = 640).

    p=0.75 {rotate ±10° (white fill) → centre-crop 426 → resize 512}, else resize 512; RandomResizedCrop(512,
    scale 0.85–1.15); p=0.75 ColorJitter(0.04×4); p=0.1 grayscale; p=0.1 GaussianBlur(5, σ 0.1–2); p=0.5 h-flip.
    """

    def __init__(self, resolution: int = 512) -> None:
        super().__init__()
        self.resolution = resolution
        self.crop = round(resolution * 426 / 512)
        self.rotate = K.RandomRotation(10.0, p=1.0)
        self.post = K.AugmentationSequential(
            K.RandomResizedCrop((resolution, resolution), scale=(0.85, 1.15), p=1.0),
            K.ColorJitter(0.04, 0.04, 0.04, 0.04, p=0.75),
            K.RandomGrayscale(p=0.1),
            K.RandomGaussianBlur((5, 5), (0.1, 2.0), p=0.1),
            K.RandomHorizontalFlip(p=0.5),
        )

    def forward(self, x: Tensor) -> Tensor:
        size = (self.resolution, self.resolution)
        rotated = 1.0 - self.rotate(1.0 - x)  # rotate the inverse so that the zero padding becomes white
        rotated = resize(center_crop(rotated, (self.crop, self.crop)), size, antialias=True)
        plain = resize(x, size, antialias=True)
        use_rot = (torch.rand(x.shape[0], device=x.device) < 0.75).view(-1, 1, 1, 1)
        return self.post(torch.where(use_rot, rotated, plain)).clamp(0.0, 1.0)


def prepare_image(image: Tensor, size: int = 640) -> Tensor:
    """[3, H, W] in [0, 1] → [1, 3, size, size]: resize the short side to ``size`` and centre-crop (spec §3)."""
    x = image[None].float()
    h, w = x.shape[-2:]
    s = size / min(h, w)
    x = resize(x, (max(size, round(h * s)), max(size, round(w * s))), antialias=True)
    return center_crop(x, (size, size))


# --------------------------------------------------------------------------------------------------------- trainer


class TokenEmbedding(nn.Module):
    """The one trainable row, injected into a frozen ``nn.Embedding``'s output wherever ``token_id`` occurs.

    Equivalent to optimising the whole embedding matrix with the other rows reset after each step (the original):
    Adam's state is per element, so the learned row sees exactly the same updates, while the matrix itself, its
    optimiser state and checkpoints stay untouched / tiny.
    """

    def __init__(self, embedding: nn.Embedding, token_id: int) -> None:
        super().__init__()
        self.token_id = token_id
        self.row = nn.Parameter(embedding.weight.detach()[token_id].float().clone())
        self._embedding = [embedding]  # not a submodule: its weights are not ours to save
        # The hook closes over the row only, not over self: a bound method would make embedding → hook → self →
        # embedding a reference cycle that keeps the text encoder alive after the phase (until a gc pass).
        row = self.row

        def inject(module: nn.Module, inputs: tuple[Tensor, ...], output: Tensor) -> Tensor:
            hit = (inputs[0] == token_id).unsqueeze(-1)
            return torch.where(hit, row.to(output.dtype), output)

        self._handle = embedding.register_forward_hook(inject)

    def sync(self) -> None:
        """Copy the row into the embedding matrix (so the text encoder alone carries the token)."""
        with torch.no_grad():
            self._embedding[0].weight[self.token_id] = self.row.detach().to(self._embedding[0].weight)

    def remove(self) -> None:
        """Detach the hook (after :meth:`sync`, the encoder behaves the same without it)."""
        self._handle.remove()


class TextualInversion(nn.Module):
    """One learnable token for SD-1.5, trained with the ε-MSE loss on augmented copies of one image.

    Args:
        tokenizer, text_encoder, vae, unet, scheduler: SD components (all frozen; the text encoder runs in fp32 and
            only the token's row, :attr:`token_embedding`, is trained).
        image: [3, H, W] RGB in [0, 1] (the raw picture, background included).
        token: placeholder, e.g. ``_panda_dance_``.
        initializer: word whose embedding initialises the token (or a [D] tensor).
        resolution: training resolution (512).
        batch_size: images per step (16).
        lr: AdamW learning rate (1e-4, betas (0.9, 0.999), wd 1e-2, eps 1e-8; constant).
        augment: the heavy augmentations (else a plain resize to ``resolution``).
        seed: seeds the prompt-template choice.
    """

    def __init__(self, tokenizer, text_encoder: nn.Module, vae: nn.Module, unet: nn.Module, scheduler,
                 image: Tensor, token: str, initializer: str | Tensor, resolution: int = 512,
                 batch_size: int = 16, lr: float = 1e-4, augment: bool = True, seed: int = 0) -> None:
        super().__init__()
        self.tokenizer, self.scheduler = tokenizer, scheduler
        self.text_encoder, self.vae, self.unet = text_encoder.float(), vae, unet
        for m in (self.text_encoder, self.vae, self.unet):
            m.requires_grad_(False)
            m.eval()
        self.token = token
        self.token_id = add_token(tokenizer, self.text_encoder, token, initializer)
        self.token_embedding = TokenEmbedding(self.text_encoder.get_input_embeddings(), self.token_id)
        device = next(unet.parameters()).device  # the picture lives with the models (it feeds the VAE every step)
        self.register_buffer("image", prepare_image(image, round(resolution * 640 / 512)).to(device),
                             persistent=False)
        self.augment = TIAugment(resolution) if augment else None
        self.resolution, self.batch_size = resolution, batch_size
        self.optimizer = torch.optim.AdamW([self.token_embedding.row], lr=lr, betas=(0.9, 0.999), weight_decay=1e-2,
                                           eps=1e-8)
        self._rng = random.Random(seed)

    @property
    def weight(self) -> Tensor:
        """The text encoder's embedding matrix [V, D] (frozen; row ``token_id`` mirrors the learned row)."""
        return self.text_encoder.get_input_embeddings().weight

    def embedding(self) -> Tensor:
        """The learned row [D] (fp32, detached)."""
        return self.token_embedding.row.detach().float().clone()

    def batch(self) -> Tensor:
        """[B, 3, R, R] augmented images in [0, 1]."""
        x = self.image.expand(self.batch_size, -1, -1, -1)
        if self.augment is not None:
            return self.augment(x)
        return resize(x, (self.resolution, self.resolution), antialias=True)

    def loss(self, pixels: Tensor, t: Optional[Tensor] = None) -> Tensor:
        """ε-prediction MSE of a batch of [B, 3, R, R] images in [0, 1] (mapped to [-1, 1] inside ``vae_encode``)."""
        with torch.no_grad():
            latents = vae_encode(self.vae, pixels)
        noise = torch.randn_like(latents)
        b = latents.shape[0]
        if t is None:
            t = torch.randint(0, self.scheduler.config.num_train_timesteps, (b,), device=latents.device)
        noisy = self.scheduler.add_noise(latents, noise, t)
        prompts = [self._rng.choice(OBJECT_TEMPLATES).format(self.token) for _ in range(b)]
        ids = self.tokenizer(prompts, padding="max_length", max_length=self.tokenizer.model_max_length,
                             truncation=True, return_tensors="pt").input_ids.to(latents.device)
        hidden = self.text_encoder(ids)[0]
        unet_dtype = next(self.unet.parameters()).dtype
        pred = self.unet(noisy.to(unet_dtype), t, hidden.to(unet_dtype)).sample.float()
        if self.scheduler.config.prediction_type == "v_prediction":
            target = self.scheduler.get_velocity(latents, noise, t)
        else:
            target = noise
        return F.mse_loss(pred, target.float())

    def step(self) -> dict[str, float]:
        """One AdamW step on the token's row (stand-alone use; the phase's loop does the same via after_step)."""
        loss = self.loss(self.batch())
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self.token_embedding.sync()
        loss_v = float(loss.detach())
        return {"ti/loss": loss_v if math.isfinite(loss_v) else float("nan"), "ti/norm": float(self.embedding().norm())}

    def set_embedding(self, value: Tensor) -> None:
        """Overwrite the learned row (resume)."""
        with torch.no_grad():
            self.token_embedding.row.copy_(value.reshape(-1))
        self.token_embedding.sync()
