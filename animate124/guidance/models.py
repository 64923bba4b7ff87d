"""The one loading path of every pretrained component (DESIGN.md §4).

:func:`load` returns a diffusers/transformers object for a ``spec`` (hub id or local directory) according to
``ModelsConfig.kind``:

- ``pretrained``: ``cls.from_pretrained(spec, subfolder=..., torch_dtype=...)``. Offline (``HF_HUB_OFFLINE=1`` or
  ``models.local_files_only``) a missing model raises :class:`MissingWeightsError` with one line naming the id and
  how to get it.
- ``tiny``: a tiny random config of the *same class* is built once by ``tiny_builder``, saved with
  ``save_pretrained`` to ``<cache>/tiny/v<N>/<spec>/<subfolder>`` (cache = ``models.cache_dir`` or
  ``$ANIMATE124_CACHE`` or ``~/.cache/animate124``) and loaded back through the same ``from_pretrained`` call.
- ``random``: ``random_builder`` builds the full-size architecture with random weights (GPU speed/memory
  benchmarks; same FLOPs and bytes as the real model, nothing saved).

Shared builders (reused by every guidance term): :func:`tiny_tokenizer`, :func:`tiny_text_encoder`,
:func:`tiny_vae`, :func:`tiny_unet`, :func:`tiny_image_encoder`, :func:`sd_scheduler`, and the full-size
:func:`random_text_encoder`, :func:`random_vae`, :func:`random_unet`, :func:`random_image_encoder`.
:func:`load_sd_components` loads the SD-1.5 set (tokenizer, text encoder, VAE, UNet, scheduler) in one call;
:func:`encode_prompts` turns prompts into ``[n, 77, D]`` embeddings.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional, Sequence, Union

import torch
from torch import Tensor, nn

from animate124.config.schema import ModelsConfig, ModelsKind
from animate124.errors import MissingWeightsError

log = logging.getLogger(__name__)

TINY_VERSION = 2
"""Bump when a tiny builder changes, so stale cached tiny models are not reused (2: seeded builds)."""
TINY_SEED = 0
"""Every tiny model is built under torch.manual_seed(TINY_SEED) (reproducible caches)."""
TINY_DIM = 32
"""Hidden size of every tiny model (text/image embedding = UNet cross-attention dim)."""
CLIP_MAX_LENGTH = 77


# --------------------------------------------------------------------------------------------- loading


def resolve_dtype(dtype: Union[str, torch.dtype], device: Union[str, torch.device]) -> torch.dtype:
    """``auto`` → fp16 on CUDA, fp32 elsewhere; otherwise a torch dtype name (float16 / bfloat16 / float32)."""
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype == "auto":
        return torch.float16 if torch.device(device).type == "cuda" else torch.float32
    try:
        out = getattr(torch, dtype)
    except AttributeError as e:
        raise ValueError(f"unknown dtype {dtype!r}; use auto, float16, bfloat16 or float32") from e
    if not isinstance(out, torch.dtype):
        raise ValueError(f"unknown dtype {dtype!r}; use auto, float16, bfloat16 or float32")
    return out


def cache_root(models_cfg: Optional[ModelsConfig] = None) -> Path:
    """``models.cache_dir`` or ``$ANIMATE124_CACHE`` or ``~/.cache/animate124``."""
    if models_cfg is not None and models_cfg.cache_dir:
        return Path(models_cfg.cache_dir).expanduser()
    env = os.environ.get("ANIMATE124_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "animate124"


def offline(models_cfg: Optional[ModelsConfig] = None) -> bool:
    """True when the hub must not be contacted (``HF_HUB_OFFLINE`` truthy or ``local_files_only``)."""
    env = os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")
    return env or bool(models_cfg is not None and models_cfg.local_files_only)


def tiny_dir(spec: str, models_cfg: Optional[ModelsConfig] = None) -> Path:
    """Where the tiny stand-in of ``spec`` lives (the hub layout is mirrored, one subfolder per component)."""
    safe = spec.strip("/").replace("/", "--").replace("\\", "--").replace(":", "_")
    return cache_root(models_cfg) / "tiny" / f"v{TINY_VERSION}" / safe


def _load_kwargs(cls: type, subfolder: Optional[str], dtype: torch.dtype, local_only: bool) -> dict[str, Any]:
    kwargs: dict[str, Any] = {}
    if subfolder:
        kwargs["subfolder"] = subfolder
    if isinstance(cls, type) and issubclass(cls, nn.Module):
        # transformers v5 renamed torch_dtype → dtype; diffusers keeps torch_dtype.
        kwargs["dtype" if cls.__module__.startswith("transformers") else "torch_dtype"] = dtype
    if local_only:
        kwargs["local_files_only"] = True
    return kwargs


GATED_REPOS = frozenset({
    "stabilityai/stable-video-diffusion-img2vid",
    "stabilityai/stable-video-diffusion-img2vid-xt",
    "stabilityai/stable-video-diffusion-img2vid-xt-1-1",
})
"""Hub repos that need an accepted licence and a login before they can be downloaded."""


def download_command(spec: str) -> str:
    """The download command of the installed huggingface_hub: ``hf download`` (≥ 0.34) or ``huggingface-cli``."""
    import huggingface_hub

    major, minor = (int(x) for x in huggingface_hub.__version__.split(".")[:2])
    return f"hf download {spec}" if (major, minor) >= (0, 34) else f"huggingface-cli download {spec}"


def _gated_hint(spec: str) -> str:
    login = "hf auth login" if download_command(spec).startswith("hf ") else "huggingface-cli login"
    return (f"{spec} is a gated repo: accept its licence on the model page while logged in, then `{login}` and "
            f"`{download_command(spec)}` on a machine with internet")


def missing_hint(spec: str, what: str) -> str:
    """One line naming what is missing and how to get it (gated repos say so)."""
    if spec in GATED_REPOS:
        return f"{what} not found locally; {_gated_hint(spec)} (or set HF_HOME to a cache holding it, or pass a local dir)"
    return (f"{what} not found locally; run `{download_command(spec)}` on a machine with internet (or set HF_HOME "
            f"to a cache holding it), or pass a local dir")


def _from_pretrained(cls: type, spec: str, subfolder: Optional[str], dtype: torch.dtype, local_only: bool) -> Any:
    """``cls.from_pretrained`` with one-line errors."""
    from huggingface_hub.errors import EntryNotFoundError, GatedRepoError, HfHubHTTPError

    kwargs = _load_kwargs(cls, subfolder, dtype, local_only)
    where = f"{spec}" + (f" (subfolder {subfolder})" if subfolder else "")
    try:
        obj = cls.from_pretrained(spec, **kwargs)
        if hasattr(obj, "get_vocab") and len(obj.get_vocab()) <= 2:
            # transformers 5 returns an empty tokenizer instead of raising when the files are missing.
            raise OSError(f"no tokenizer files in {where}")
        return obj
    except GatedRepoError as e:
        raise MissingWeightsError(f"{cls.__name__} {where}: {_gated_hint(spec)}") from e
    except (OSError, ValueError, EntryNotFoundError, HfHubHTTPError) as e:
        if Path(spec).expanduser().is_dir():
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise MissingWeightsError(
                f"could not load {cls.__name__} from local dir {where}: {first}; check the folder holds a "
                f"diffusers/transformers layout ({subfolder or '.'}/config.json + weights)"
            ) from e
        raise MissingWeightsError(missing_hint(spec, f"{cls.__name__} {where}")) from e


def model_index(spec: str, models_cfg: Optional[ModelsConfig] = None) -> dict[str, Any]:
    """A diffusers repo's ``model_index.json`` (a local dir's file, or the hub's, from the cache when offline).

    Raises:
        MissingWeightsError: no such file (the message names the repo and how to get it).
    """
    from huggingface_hub.errors import GatedRepoError, HfHubHTTPError

    local = Path(spec).expanduser()
    if local.is_dir():
        path = local / "model_index.json"
        if not path.is_file():
            raise MissingWeightsError(f"local dir {spec} has no model_index.json; pass a diffusers pipeline folder "
                                      f"(model_index.json + one subfolder per component)")
    else:
        from huggingface_hub import hf_hub_download

        try:
            path = Path(hf_hub_download(spec, "model_index.json", local_files_only=offline(models_cfg)))
        except GatedRepoError as e:
            raise MissingWeightsError(f"model_index.json of {_gated_hint(spec)}") from e
        except (OSError, ValueError, HfHubHTTPError) as e:
            raise MissingWeightsError(missing_hint(spec, f"model_index.json of {spec}")) from e
    return json.loads(path.read_text())


def pipeline_components(index: dict[str, Any]) -> dict[str, tuple[Optional[str], Optional[str]]]:
    """``{component folder: (library, class name)}`` of a model_index.json (``_``-keys and flags dropped)."""
    return {k: (v[0], v[1]) for k, v in index.items()
            if not k.startswith("_") and isinstance(v, list) and len(v) == 2}


def _build_tiny(target: Path, subfolder: Optional[str], builder: Callable[[], Any]) -> None:
    """Build with ``builder`` and ``save_pretrained`` into ``target`` atomically (safe under concurrent tests)."""
    dest = target / subfolder if subfolder else target
    if dest.is_dir() and any(dest.iterdir()):
        return
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.parent / f".{dest.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    # Seeded: a tiny model's weights must not depend on which test happened to build the cache first.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(TINY_SEED)
        obj = builder()
    obj.save_pretrained(str(tmp))
    try:
        os.rename(tmp, dest)
    except OSError:  # another process won the race: keep theirs
        shutil.rmtree(tmp, ignore_errors=True)


def load(
    cls: type,
    spec: str,
    subfolder: Optional[str] = None,
    dtype: Union[str, torch.dtype] = "auto",
    models_cfg: Optional[ModelsConfig] = None,
    tiny_builder: Optional[Callable[[], Any]] = None,
    random_builder: Optional[Callable[[], Any]] = None,
    device: Union[str, torch.device] = "cpu",
) -> Any:
    """Load one component (model, tokenizer, scheduler, image processor, ...).

    Args:
        cls: class with ``from_pretrained`` (and ``save_pretrained`` for tiny), e.g. ``UNet2DConditionModel``.
        spec: hub id (``stable-diffusion-v1-5/stable-diffusion-v1-5``) or a local directory.
        subfolder: component folder inside ``spec`` (``unet``, ``vae``, ...), None for a flat layout.
        dtype: ``auto`` / dtype name / torch dtype (modules only).
        models_cfg: the run's ModelsConfig (kind, cache_dir, local_files_only); default = pretrained.
        tiny_builder: ``() -> obj`` building a tiny random instance of ``cls`` (needed for kind=tiny).
        random_builder: ``() -> obj`` building the full-size architecture with random weights (kind=random;
            defaults to ``tiny_builder``'s object for components without weights, e.g. a scheduler).
        device: where modules are moved.

    Returns:
        The object; ``nn.Module`` results are on ``device`` in ``dtype``, eval mode, ``requires_grad=False``.

    Raises:
        MissingWeightsError: the weights are not available (offline or not downloaded) or the folder is broken.
    """
    models_cfg = models_cfg or ModelsConfig()
    kind = ModelsKind(models_cfg.kind)
    torch_dtype = resolve_dtype(dtype if dtype != "auto" else models_cfg.dtype, device)
    if kind == ModelsKind.pretrained:
        obj = _from_pretrained(cls, spec, subfolder, torch_dtype, offline(models_cfg))
    elif kind == ModelsKind.tiny:
        if tiny_builder is None:
            raise ValueError(f"no tiny builder for {cls.__name__} {spec}")
        root = tiny_dir(spec, models_cfg)
        _build_tiny(root, subfolder, tiny_builder)
        obj = _from_pretrained(cls, str(root), subfolder, torch_dtype, True)
    else:
        builder = random_builder or tiny_builder
        if builder is None:
            raise ValueError(f"no random builder for {cls.__name__} {spec}")
        obj = builder()
    if isinstance(obj, nn.Module):
        if any(p.dtype != torch_dtype for p in obj.parameters() if p.is_floating_point()):
            obj = obj.to(dtype=torch_dtype)
        obj = obj.to(device=device)
        obj.eval()
        obj.requires_grad_(False)
        _apply_checkpointing(obj, models_cfg)
    return obj


def _apply_checkpointing(module: nn.Module, models_cfg: ModelsConfig) -> None:
    """The memory levers ``models.vae_checkpointing`` / ``models.unet_checkpointing`` (diffusers' gradient
    checkpointing of VAEs / UNets; exact, one more forward of the checkpointed blocks in backward)."""
    if not hasattr(module, "enable_gradient_checkpointing"):
        return
    name = type(module).__name__
    if (models_cfg.vae_checkpointing and name.startswith("Autoencoder")) or (
            models_cfg.unet_checkpointing and name.startswith("UNet")):
        module.enable_gradient_checkpointing()


# --------------------------------------------------------------------------------------------- prompts


_TRUNCATED: set[str] = set()


def warn_truncated(tokenizer: Any, prompts: Sequence[str], max_len: int) -> list[str]:
    """Log one warning per prompt longer than the tokenizer's limit (it is truncated); returns those prompts."""
    long = []
    for prompt in dict.fromkeys(prompts):
        n = len(tokenizer(prompt, truncation=False).input_ids)
        if n > max_len:
            long.append(prompt)
            if prompt not in _TRUNCATED:
                _TRUNCATED.add(prompt)
                kept = tokenizer.decode(tokenizer(prompt, truncation=True, max_length=max_len).input_ids,
                                        skip_special_tokens=True)
                log.warning("prompt %r is %d tokens; the text encoder reads %d, so it is truncated after %r; shorten "
                            "it to keep the rest", prompt[:60] + ("..." if len(prompt) > 60 else ""), n, max_len,
                            kept[-40:])
    return long


def encode_prompts(tokenizer: Any, text_encoder: nn.Module, prompts: Sequence[str]) -> Tensor:
    """CLIP text embeddings (last hidden state) of ``prompts``.

    Returns:
        [n, 77, D] in the text encoder's dtype, on its device (no grad).
    """
    max_len = min(int(getattr(tokenizer, "model_max_length", CLIP_MAX_LENGTH)), CLIP_MAX_LENGTH)
    warn_truncated(tokenizer, prompts, max_len)
    ids = tokenizer(list(prompts), padding="max_length", max_length=max_len, truncation=True,
                    return_tensors="pt").input_ids
    device = next(text_encoder.parameters()).device
    with torch.no_grad():
        return text_encoder(ids.to(device))[0]


# --------------------------------------------------------------------------------------------- tiny builders


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP byte → printable-unicode table (256 entries)."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, (chr(c) for c in cs)))


def tiny_tokenizer() -> Any:
    """A CLIPTokenizer with a 514-token byte-level vocab (256 chars + their ``</w>`` forms + 2 specials, no merges).

    Same class, pre-tokenisation and special tokens as CLIP (bos 512, eos = pad 513), model_max_length 77.
    """
    from transformers import CLIPTokenizer

    chars = list(_bytes_to_unicode().values())
    vocab = {c: i for i, c in enumerate(chars)}
    vocab.update({c + "</w>": len(chars) + i for i, c in enumerate(chars)})
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    return CLIPTokenizer(vocab=vocab, merges=[], model_max_length=CLIP_MAX_LENGTH)


def tiny_text_encoder(hidden_size: int = TINY_DIM) -> nn.Module:
    """CLIPTextModel matching :func:`tiny_tokenizer` (vocab 514)."""
    from transformers import CLIPTextConfig, CLIPTextModel

    cfg = CLIPTextConfig(vocab_size=514, hidden_size=hidden_size, intermediate_size=37, num_attention_heads=4,
                         num_hidden_layers=2, max_position_embeddings=CLIP_MAX_LENGTH, bos_token_id=512,
                         eos_token_id=513, pad_token_id=513, projection_dim=hidden_size)
    return CLIPTextModel(cfg)


def tiny_vae() -> nn.Module:
    """AutoencoderKL with SD's downsampling factor 8 (4 blocks) but 8–16 channels (0.07 M parameters)."""
    from diffusers import AutoencoderKL

    return AutoencoderKL(in_channels=3, out_channels=3, block_out_channels=(8, 8, 16, 16), layers_per_block=1,
                         down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
                         latent_channels=4, norm_num_groups=8, sample_size=64)


def tiny_unet(in_channels: int = 4, cross_attention_dim: int = TINY_DIM) -> nn.Module:
    """UNet2DConditionModel (32, 64) channels, one cross-attention level (1.4 M parameters)."""
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel(sample_size=8, in_channels=in_channels, out_channels=4, block_out_channels=(32, 64),
                                layers_per_block=1, down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
                                up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
                                cross_attention_dim=cross_attention_dim, attention_head_dim=8, norm_num_groups=16)


def tiny_image_encoder(projection_dim: int = TINY_DIM) -> nn.Module:
    """CLIPVisionModelWithProjection, 224² input, patch 32, 2 layers."""
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    cfg = CLIPVisionConfig(hidden_size=32, intermediate_size=37, num_attention_heads=4, num_hidden_layers=2,
                           image_size=224, patch_size=32, projection_dim=projection_dim)
    return CLIPVisionModelWithProjection(cfg)


SD_SCHEDULER_CONFIG: dict[str, Any] = dict(
    num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
    clip_sample=False, set_alpha_to_one=False, steps_offset=1, prediction_type="epsilon",
)
"""SD-1.5's scheduler config (also Zero123's and ModelScope's)."""


def sd_scheduler() -> Any:
    """DDIMScheduler with SD-1.5's config (ᾱ is all SDS needs; the same for tiny and random models)."""
    from diffusers import DDIMScheduler

    return DDIMScheduler(**SD_SCHEDULER_CONFIG)


# --------------------------------------------------------------------------------------------- full-size random


def random_text_encoder(hidden_size: int = 768, layers: int = 12, heads: int = 12, inter: int = 3072) -> nn.Module:
    """CLIP ViT-L/14 text tower (SD-1.5's text encoder) with random weights."""
    from transformers import CLIPTextConfig, CLIPTextModel

    cfg = CLIPTextConfig(vocab_size=49408, hidden_size=hidden_size, intermediate_size=inter,
                         num_attention_heads=heads, num_hidden_layers=layers, max_position_embeddings=77,
                         hidden_act="quick_gelu", projection_dim=768)
    return CLIPTextModel(cfg)


def random_vae() -> nn.Module:
    """SD-1.5's AutoencoderKL architecture with random weights."""
    from diffusers import AutoencoderKL

    return AutoencoderKL(in_channels=3, out_channels=3, block_out_channels=(128, 256, 512, 512), layers_per_block=2,
                         down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
                         latent_channels=4, norm_num_groups=32, sample_size=512, scaling_factor=0.18215)


def random_unet(in_channels: int = 4, cross_attention_dim: int = 768) -> nn.Module:
    """SD-1.5's UNet2DConditionModel architecture (860 M parameters) with random weights; Zero123 uses in_channels=8."""
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel(
        sample_size=64, in_channels=in_channels, out_channels=4, block_out_channels=(320, 640, 1280, 1280),
        layers_per_block=2, cross_attention_dim=cross_attention_dim, attention_head_dim=8,
        down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
        up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
    )


def random_image_encoder() -> nn.Module:
    """CLIP ViT-L/14 vision tower with projection (Zero123's image encoder) with random weights."""
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    cfg = CLIPVisionConfig(hidden_size=1024, intermediate_size=4096, num_attention_heads=16, num_hidden_layers=24,
                           image_size=224, patch_size=14, projection_dim=768, hidden_act="quick_gelu")
    return CLIPVisionModelWithProjection(cfg)


# --------------------------------------------------------------------------------------------- SD component set


@dataclass
class SDComponents:
    """The pieces of a Stable Diffusion checkpoint that SDS needs."""

    tokenizer: Any
    text_encoder: nn.Module
    vae: nn.Module
    unet: nn.Module
    scheduler: Any

    @property
    def alphas_cumprod(self) -> Tensor:
        """[T] ᾱ of the scheduler (fp32, CPU)."""
        return self.scheduler.alphas_cumprod.float()


def load_sd_components(spec: str, models_cfg: Optional[ModelsConfig], device: Union[str, torch.device] = "cpu",
                       dtype: Union[str, torch.dtype] = "auto") -> SDComponents:
    """Load SD-1.5 (or any SD-1.x layout: tokenizer, text_encoder, vae, unet, scheduler) through :func:`load`."""
    from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    def one(cls: type, sub: str, tiny: Callable[[], Any], rand: Optional[Callable[[], Any]] = None) -> Any:
        return load(cls, spec, sub, dtype, models_cfg, tiny, rand, device)

    return SDComponents(
        tokenizer=one(CLIPTokenizer, "tokenizer", tiny_tokenizer),
        text_encoder=one(CLIPTextModel, "text_encoder", tiny_text_encoder, random_text_encoder),
        vae=one(AutoencoderKL, "vae", tiny_vae, random_vae),
        unet=one(UNet2DConditionModel, "unet", tiny_unet, random_unet),
        scheduler=one(DDIMScheduler, "scheduler", sd_scheduler),
    )
