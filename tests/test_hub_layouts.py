"""The five real hub layouts (tests/fixtures/hub_layouts/*.json, each citing its public source), rebuilt with tiny
models in exactly those folders and file names and loaded through guidance/models.py by local dir with
``models=pretrained``. A wrong subfolder or weight-file name in the loading code fails here, on the CPU."""

import json
from pathlib import Path

import pytest
import torch

from animate124.config.guidance import (
    ControlNetGuidanceConfig,
    ImageVideoGuidanceConfig,
    StableDiffusionGuidanceConfig,
    VideoGuidanceConfig,
    Zero123GuidanceConfig,
)
from animate124.config.schema import ModelsConfig, ModelsKind
from animate124.guidance import models as M
from animate124.guidance.base import TermInputs
from animate124.types import GuidanceContext

FIXTURES = Path(__file__).parent / "fixtures" / "hub_layouts"
LAYOUTS = {p.stem: json.loads(p.read_text()) for p in sorted(FIXTURES.glob("*.json"))}
WEIGHT_SUFFIXES = (".safetensors", ".bin")


def _builder(repo: str, component: str):
    """Tiny stand-in of ``component`` of ``repo`` (same class as the real one)."""
    from diffusers import EulerDiscreteScheduler

    from animate124.guidance import svd_models
    from animate124.guidance.controlnet import tiny_controlnet
    from animate124.guidance.video import tiny_unet3d
    from animate124.guidance.zero123 import CLIPCameraProjection

    svd = "stable-video-diffusion" in repo
    unets = {"zero123": lambda: M.tiny_unet(in_channels=8), "text-to-video": lambda: tiny_unet3d(M.TINY_DIM),
             "stable-video-diffusion": svd_models.tiny_unet}
    table = {
        "scheduler": (lambda: EulerDiscreteScheduler(**svd_models.SCHEDULER_CONFIG)) if svd else M.sd_scheduler,
        "text_encoder": M.tiny_text_encoder,
        "tokenizer": M.tiny_tokenizer,
        "unet": next((b for key, b in unets.items() if key in repo), M.tiny_unet),
        "vae": svd_models.tiny_vae if svd else M.tiny_vae,
        "image_encoder": svd_models.tiny_image_encoder if svd else M.tiny_image_encoder,
        "clip_camera_projection": lambda: CLIPCameraProjection(M.TINY_DIM, 4),
        ".": tiny_controlnet,
    }
    return table[component]


def _slow_tokenizer_files(tokenizer, folder: Path) -> None:
    """The real repos ship CLIP's vocab.json + merges.txt (+ special_tokens_map.json), no tokenizer.json."""
    (folder / "vocab.json").write_text(json.dumps(tokenizer.get_vocab()))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    specials = {"bos_token": "<|startoftext|>", "eos_token": "<|endoftext|>", "pad_token": "<|endoftext|>",
                "unk_token": "<|endoftext|>"}
    (folder / "special_tokens_map.json").write_text(json.dumps(specials))
    (folder / "tokenizer.json").unlink(missing_ok=True)


def _materialise(layout: dict, root: Path) -> Path:
    """Write model_index.json and save a tiny model into every listed folder; keep only the listed weight files."""
    root.mkdir(parents=True, exist_ok=True)
    if layout["model_index"] is not None:
        (root / "model_index.json").write_text(json.dumps(layout["model_index"], indent=2))
    for component, files in layout["files"].items():
        folder = root / component
        obj = _builder(layout["repo"], component)()
        kwargs = {}
        if isinstance(obj, torch.nn.Module) and any(f.endswith(".bin") for f in files):
            kwargs["safe_serialization"] = False
        obj.save_pretrained(str(folder), **kwargs)
        if component == "tokenizer":
            _slow_tokenizer_files(obj, folder)
        present = {p.name for p in folder.iterdir() if p.is_file()}
        assert set(files) <= present, f"{layout['repo']}/{component}: saved {sorted(present)}, layout needs {files}"
        for extra in present - set(files):
            if extra.endswith(WEIGHT_SUFFIXES):
                (folder / extra).unlink()
    return root


class _Hub:
    """Layouts materialised on first use (each test builds only the repos it loads)."""

    def __init__(self, base: Path) -> None:
        self.base, self.built = base, {}

    def __getitem__(self, name: str) -> Path:
        if name not in self.built:
            self.built[name] = _materialise(LAYOUTS[name], self.base / name)
        return self.built[name]


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    return _Hub(tmp_path_factory.mktemp("hub"))


PRETRAINED = ModelsConfig(kind=ModelsKind.pretrained, local_files_only=True)


def _ctx(frames: int = 1) -> GuidanceContext:
    e = torch.zeros(1, frames)
    return GuidanceContext(step=0, elevation=e + 20.0, azimuth=e + 90.0, radius=e + 1.8, times=torch.zeros(1, frames))


def test_the_five_layouts_are_present_and_cited():
    assert set(LAYOUTS) == {"stable-diffusion-v1-5--stable-diffusion-v1-5", "bennyguo--zero123-xl-diffusers",
                            "damo-vilab--text-to-video-ms-1.7b", "lllyasviel--control_v11f1e_sd15_tile",
                            "stabilityai--stable-video-diffusion-img2vid"}
    for layout in LAYOUTS.values():
        assert layout["sources"] and all(s.strip() for s in layout["sources"])
    sd = LAYOUTS["stable-diffusion-v1-5--stable-diffusion-v1-5"]["model_index"]
    assert {"feature_extractor", "safety_checker", "scheduler", "text_encoder", "tokenizer", "unet", "vae"} <= set(sd)


def test_zero123_xl_loads_its_clip_camera_projection(hub):
    """Defect 3: the default repo's model_index.json names clip_camera_projection; HEAD looked for cc_projection."""
    from animate124.guidance.zero123 import CLIPCameraProjection, Zero123Guidance

    cfg = Zero123GuidanceConfig(model=str(hub["bennyguo--zero123-xl-diffusers"]), resolution=64)
    term = Zero123Guidance(cfg, TermInputs(models_cfg=PRETRAINED, reference=torch.rand(3, 64, 64)))
    assert isinstance(term.cc_projection, CLIPCameraProjection)
    out = term(torch.rand(1, 1, 3, 32, 32, requires_grad=True), _ctx())
    assert torch.isfinite(out.loss)


def test_sd15_and_controlnet_tile_load(hub):
    from animate124.guidance.controlnet import ControlNetTileGuidance
    from animate124.guidance.stable_diffusion import StableDiffusionGuidance

    sd_root = str(hub["stable-diffusion-v1-5--stable-diffusion-v1-5"])
    term = StableDiffusionGuidance(StableDiffusionGuidanceConfig(model=sd_root, resolution=64),
                                   TermInputs(models_cfg=PRETRAINED, prompt="a panda"))
    assert term.cond_embs.shape[-1] == M.TINY_DIM
    cn_cfg = ControlNetGuidanceConfig(model=str(hub["lllyasviel--control_v11f1e_sd15_tile"]), base_model=sd_root,
                                      size=64)
    cn = ControlNetTileGuidance(cn_cfg, TermInputs(models_cfg=PRETRAINED, prompt="a panda"))
    assert type(cn.controlnet).__name__ == "ControlNetModel"


def test_text_to_video_and_svd_load(hub):
    from animate124.guidance.image_video import ImageVideoGuidance
    from animate124.guidance.video import VideoSDS

    video = VideoSDS(VideoGuidanceConfig(model=str(hub["damo-vilab--text-to-video-ms-1.7b"]), height=64, width=64),
                     TermInputs(models_cfg=PRETRAINED, prompt="a panda is dancing"))
    assert type(video.unet).__name__ == "UNet3DConditionModel"
    svd = ImageVideoGuidance(ImageVideoGuidanceConfig(model=str(hub["stabilityai--stable-video-diffusion-img2vid"]),
                                                      height=32, width=32),
                             TermInputs(models_cfg=PRETRAINED, reference=torch.rand(3, 32, 32)))
    assert type(svd.vae).__name__ == "AutoencoderKLTemporalDecoder"


def test_a_wrong_subfolder_fails_on_the_cpu(hub, tmp_path):
    import shutil

    from animate124.errors import MissingWeightsError
    from animate124.guidance.zero123 import Zero123Guidance

    broken = tmp_path / "zero123"
    shutil.copytree(hub["bennyguo--zero123-xl-diffusers"], broken)
    shutil.rmtree(broken / "clip_camera_projection")
    with pytest.raises(MissingWeightsError, match="clip_camera_projection"):
        Zero123Guidance(Zero123GuidanceConfig(model=str(broken), resolution=64),
                        TermInputs(models_cfg=PRETRAINED, reference=torch.rand(3, 64, 64)))
