"""The dynamic phase with the image-conditioned video prior (guidance.video.kind=image|both), tiny models, CPU."""

import numpy as np
import pytest
from test_dynamic_phase import COMMON, DYNAMIC, _cfg, static_run  # noqa: F401  (static_run is a fixture)

from animate124.io.checkpoint import latest_checkpoint
from animate124.phases.base import train
from animate124.phases.dynamic import DynamicPhase

IMAGE_PRIOR = ["guidance.image_video.height=32", "guidance.image_video.width=32", "guidance.zero123.enabled=false"]


@pytest.mark.parametrize("kind", ["image", "both"])
def test_dynamic_phase_with_the_image_video_prior(static_run, kind, tmp_path):  # noqa: F811
    run_dir, image = static_run
    cfg = _cfg(*COMMON, *DYNAMIC, *IMAGE_PRIOR, f"image={image}", f"guidance.video.kind={kind}",
               "phase.max_steps=2", "phase.known_interval=1000", f"init_from={run_dir / 'static'}")
    phase = DynamicPhase(cfg, tmp_path / kind)
    report = train(phase)
    names = sorted(t.name for t in phase.video_terms)
    assert names == (["image_video"] if kind == "image" else ["image_video", "video"])
    stats = report["last_train_stats"]
    assert report["complete"] and np.isfinite(stats["loss"]) and stats["image_video/loss"] > 0
    assert ("video/loss" in stats) == (kind == "both")
    assert latest_checkpoint(tmp_path / kind / "dynamic" / "checkpoints") is not None
