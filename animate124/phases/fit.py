"""``phase=fit``: supervised 4D reconstruction of a D-NeRF-layout dataset (the representation's yardstick).

Each step draws ``batch_rays`` random pixels of random training frames. Every ray is composited on a random
background colour with the ground-truth alpha (gt·α + bg·(1−α)) and rendered on the same colour: with a fixed white
background the field can explain white pixels by white haze anywhere, which hides the object in novel views.
The loss adds the field's per-level temporal regulariser (``lambda_time_tv``·decay^ℓ per level ℓ;
:meth:`animate124.fields.GridField.time_smoothness`), so that the field generalises to times between the training
times.

Validation (every ``val_every`` steps) renders VALIDATION frames only: the dataset's val split, or ``val_holdout``
training frames held out of training when it has none. The best val step is reported (``metrics.best_step``) and,
with ``keep_best``, its field is kept in ``<phase>/best/`` and evaluated at the end. Test frames never choose the
model: they are rendered at the end (and, with ``curve_test_frames``, for the report's curve only). The final
report states train, val and test PSNR on white (``metrics.{train,val,test}_psnr``).

Example:
    python -m animate124.run phase=fit field=fit_cpu render=fit_cpu data.path=outputs/blobs/data
"""

from __future__ import annotations

import dataclasses
import logging
import math
from pathlib import Path
from typing import Any

import imageio.v3 as iio
import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from animate124.config.phases import FitPhaseConfig
from animate124.data.dnerf import DNeRFSplit, load_dnerf
from animate124.errors import CheckpointError, InputError
from animate124.fields import GridField, build_field, level_weights, load_field_state
from animate124.io.checkpoint import latest_checkpoint, load_checkpoint, merge_states, save_checkpoint, split_state
from animate124.io.handoff import find_checkpoint
from animate124.metrics.image import psnr, psnr_tensor
from animate124.phases.base import Phase, StepOutput
from animate124.render.cameras import Cameras, pixel_rays
from animate124.render.occupancy import OccupancyGrid, carve_occupancy
from animate124.render.volume import VolumeRenderer
from animate124.types import RenderRequest

log = logging.getLogger(__name__)


class FitPhase(Phase):
    """Fit the dynamic field to multi-view video with an MSE loss on random-background rays."""

    name = "fit"
    pcfg: FitPhaseConfig
    field: GridField
    occupancy: OccupancyGrid
    optimizer: torch.optim.Optimizer

    def build(self) -> None:
        cfg, p = self.cfg, self.pcfg
        if not cfg.data.path:
            raise InputError("phase=fit needs a dataset: pass data.path=DIR (a D-NeRF folder; make one with "
                             "python -m animate124.data.synthetic out=DIR)")
        if p.batch_rays < 1:
            raise InputError(f"phase.batch_rays must be >= 1 (got {p.batch_rays})")
        self.train_data, self.val_data, self.val_source = load_fit_splits(cfg.data, p.val_holdout)
        self.test_data = load_dnerf(cfg.data.path, "test", cfg.data.downscale, cfg.data.scale)
        self.field = build_field(cfg.field, dynamic=True).to(self.device)
        self.time_weights = [p.lambda_time_tv * w for w in level_weights(cfg.field.num_levels, p.time_tv_level_decay)]
        self.best: dict[str, float] = {}
        """``step`` and ``val_psnr`` of the best validation so far (restored on resume)."""
        self.occupancy = OccupancyGrid.from_config(cfg.render, p.time_slots, cfg.field.bound,
                                                   density_thresh=p.occupancy_thresh).to(self.device)
        self.renderer = VolumeRenderer(self.field, self.occupancy, cfg.render)
        self.hull: Tensor | None = None
        if p.carve_occupancy:
            self.hull = carve_occupancy(self.occupancy, self.train_data)
            self.occupancy.bitfield.copy_(self.hull)
        self.optimizer = torch.optim.Adam(self.field.param_groups(p.optim.lr, p.optim.grid_lr_scale),
                                          betas=tuple(p.optim.betas), eps=p.optim.eps)
        self._base_lrs = [g["lr"] for g in self.optimizer.param_groups]
        log.info("fit: %d train / %d val (%s) / %d test frames of %dx%d from %s", len(self.train_data),
                 len(self.val_data), self.val_source, len(self.test_data), self.train_data.height, self.train_data.width,
                 cfg.data.path)

    def init(self) -> None:
        """Fresh start: load the field of ``init_from`` when given.

        ``init_from`` is a checkpoint directory (``.../checkpoints/step-NNNNNNN``) or a phase folder / its
        ``checkpoints/`` folder, whose latest checkpoint is used.
        """
        if not self.cfg.init_from:
            return
        ckpt, _ = find_checkpoint(self.run_dir, ("fit",), init_from=self.cfg.init_from)
        # only the field: the occupancy grid is re-derived (visual hull + refreshes) and may have other slots
        load_field_state(self.field, split_state(load_checkpoint(ckpt, map_location=self.device)[0], "field"))
        log.info("fit: initialised from %s", ckpt)

    def refresh_occupancy(self, step: int) -> None:
        """The field's occupancy update, restricted to the training views' visual hull."""
        if self.hull is not None and step == 0:
            return  # the untrained field knows nothing yet: start from the hull alone
        super().refresh_occupancy(step)
        if self.hull is not None:
            self.occupancy.bitfield &= self.hull

    def _lr_factor(self, step: int) -> float:
        """Exponential decay from 1 to ``lr_final_ratio`` over the phase."""
        ratio = float(self.pcfg.lr_final_ratio)
        return ratio ** (min(step, self.max_steps) / max(1, self.max_steps))

    def train_step(self, step: int) -> StepOutput:
        data, p, dev = self.train_data, self.pcfg, self.device
        factor = self._lr_factor(step)
        for group, base in zip(self.optimizer.param_groups, self._base_lrs):
            group["lr"] = base * factor
        n_pix = data.height * data.width
        flat = torch.randint(len(data) * n_pix, (p.batch_rays,))
        frame, pixel = flat // n_pix, flat % n_pix
        rays_o, rays_d = pixel_rays(data.c2w[frame], pixel, data.width, data.height, data.focal)
        if p.random_background:
            bg = torch.rand(p.batch_rays, 3)
        else:
            bg = torch.full((p.batch_rays, 3), 1.0 if self.cfg.data.white_background else 0.0)
        target = data.composite(bg, flat)
        out = self.renderer.render_rays(rays_o.to(dev), rays_d.to(dev), data.times[frame].to(dev),
                                        RenderRequest(bg.to(dev), perturb=True))
        mse = F.mse_loss(out.rgb.float(), target.to(dev))
        assert out.sample_weights is not None  # render_rays always returns them
        stats = {"psnr": psnr_tensor(mse),
                 "samples_per_ray": out.sample_weights.numel() / p.batch_rays}
        loss = mse
        if p.lambda_time_tv > 0:
            reg = self.field.time_smoothness(self.time_weights, p.time_smooth_points, p.time_smooth_dt).float()
            loss = loss + reg
            stats["reg/time_smooth"] = reg.detach()
        return StepOutput(loss, stats)

    # ------------------------------------------------------------------ evaluation
    def _render(self, data: DNeRFSplit, frames: list[int]) -> tuple[Tensor, Tensor]:
        """Render frames of a split at ``eval_size`` (or the dataset size) on white (black if
        ``data.white_background`` is false): predictions and targets [n, H, W, 3]."""
        size = self.pcfg.eval_size
        idx = torch.tensor(frames)
        cams = Cameras(data.c2w[idx], torch.full((len(frames),), data.fovy), data.height, data.width)
        white = bool(self.cfg.data.white_background)
        bg = torch.full((3,), 1.0 if white else 0.0)
        target = data.images[idx] if white else data.composite(bg)[idx]
        if size is not None and size != data.height:
            cams = cams.resized(size, round(size * data.width / data.height))
            target = F.interpolate(target.permute(0, 3, 1, 2), size=(cams.height, cams.width), mode="area")
            target = target.permute(0, 2, 3, 1)
        self.field.eval()
        preds = [self.renderer.render_image(cams[k], data.times[idx[k : k + 1]].to(self.device)[:, None],
                                            RenderRequest(bg.to(self.device))).rgb[0, 0]
                 for k in range(len(frames))]
        self.field.train()
        return torch.stack(preds).clamp(0, 1).cpu(), target

    def _render_test(self, frames: list[int]) -> tuple[Tensor, Tensor]:
        """Test frames: predictions and targets [n, H, W, 3] (see :meth:`_render`)."""
        return self._render(self.test_data, frames)

    def _test_frames(self, limit: int | None) -> list[int]:
        return spread_frames(len(self.test_data), limit)

    def _save_best(self, step: int, value: float) -> None:
        self.best = {"step": step, "val_psnr": value}
        if self.pcfg.keep_best:
            mods = {"field": self.field, "occupancy": self.occupancy}
            save_checkpoint(self.dirs.root / "best", step, merge_states(mods), None, {"best": self.best}, keep=1)

    def validate(self, step: int) -> dict[str, float]:
        pred, target = self._render(self.val_data, spread_frames(len(self.val_data), self.pcfg.val_max_frames))
        metrics = {"val_psnr": psnr(pred, target)}
        if metrics["val_psnr"] > self.best.get("val_psnr", -math.inf):
            self._save_best(step, metrics["val_psnr"])
        if self.pcfg.curve_test_frames > 0:  # reported only: never compared, never selects
            metrics["test_psnr"] = psnr(*self._render_test(self._test_frames(self.pcfg.curve_test_frames)))
        log.info("fit: step %d val PSNR %.2f dB (best %.2f at step %d)%s", step, metrics["val_psnr"],
                 self.best["val_psnr"], self.best["step"],
                 f", test {metrics['test_psnr']:.2f} dB (not used)" if "test_psnr" in metrics else "")
        return metrics

    def extra_state(self) -> dict[str, Any]:
        return {"best": self.best}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        self.best = dict(state.get("best", {}))

    def _load_best(self, step: int) -> int:
        """With ``keep_best``: load the best val step's field (and occupancy); returns the evaluated step."""
        self.validate(step)  # the last state competes too (validate() is not called at the last step)
        if not self.pcfg.keep_best or int(self.best["step"]) == step:
            return step
        ckpt = latest_checkpoint(self.dirs.root / "best")
        if ckpt is None:
            raise CheckpointError(f"phase.keep_best=true but {self.dirs.root / 'best'} holds no checkpoint; re-run "
                                  "the phase from scratch (delete its folder) to keep the best step")
        state = load_checkpoint(ckpt, map_location=self.device)[0]
        load_field_state(self.field, split_state(state, "field"))
        self.occupancy.load_state_dict(split_state(state, "occupancy"))
        log.info("fit: evaluating the best val step %d (%s)", int(self.best["step"]), ckpt)
        return int(self.best["step"])

    def final(self, step: int) -> dict[str, Any]:
        p = self.pcfg
        evaluated = self._load_best(step)
        frames = self._test_frames(p.eval_max_frames)
        pred, target = self._render_test(frames)
        per_frame = [psnr(pred[k], target[k]) for k in range(len(frames))]
        self.dirs.val.mkdir(parents=True, exist_ok=True)
        for k in range(min(len(frames), p.save_val_images)):
            pair = torch.cat([target[k], pred[k]], dim=1)  # ground truth | prediction
            iio.imwrite(self.dirs.val / f"test_{frames[k]:03d}.png", (pair.numpy() * 255 + 0.5).astype(np.uint8))
        val_pred, val_target = self._render(self.val_data, list(range(len(self.val_data))))
        train_frames = spread_frames(len(self.train_data), max(1, p.eval_train_frames))
        metrics = {"test_psnr": psnr(pred, target), "test_psnr_mean_of_frames": float(np.mean(per_frame)),
                   "val_psnr": psnr(val_pred, val_target),
                   "train_psnr": psnr(*self._render(self.train_data, train_frames)),
                   "test_frames": len(frames), "val_frames": len(self.val_data), "val_source": self.val_source,
                   "best_step": int(self.best["step"]), "best_val_psnr": float(self.best["val_psnr"]),
                   "evaluated_step": evaluated, "occupancy_ratio": self.occupancy.occupancy_ratio()}
        log.info("fit: step %d: train %.2f / val %.2f / test %.2f dB (best val step %d)", evaluated,
                 metrics["train_psnr"], metrics["val_psnr"], metrics["test_psnr"], metrics["best_step"])
        return metrics


def spread_frames(n: int, limit: int | None) -> list[int]:
    """``limit`` frame indices spread evenly over ``n`` frames (all when ``limit`` is None or ≥ n)."""
    if limit is None or limit >= n:
        return list(range(n))
    return np.linspace(0, n - 1, max(1, limit)).round().astype(int).tolist()


def subset(split: DNeRFSplit, index: list[int]) -> DNeRFSplit:
    """The frames ``index`` of a split."""
    idx = torch.tensor(index, dtype=torch.long)
    return dataclasses.replace(split, images=split.images[idx], alphas=split.alphas[idx], c2w=split.c2w[idx],
                               times=split.times[idx])


def load_fit_splits(data_cfg: Any, holdout: int) -> tuple[DNeRFSplit, DNeRFSplit, str]:
    """Train and validation splits: the dataset's val split when it has one (``"val split"``), else ``holdout``
    evenly spaced training frames held out of training (``"held-out train frames"``)."""
    train = load_dnerf(data_cfg.path, "train", data_cfg.downscale, data_cfg.scale)
    if (Path(data_cfg.path) / "transforms_val.json").is_file():
        return train, load_dnerf(data_cfg.path, "val", data_cfg.downscale, data_cfg.scale), "val split"
    if holdout < 1 or holdout >= len(train):
        raise InputError(f"{data_cfg.path} has no val split and phase.val_holdout={holdout} cannot hold out frames "
                         f"of its {len(train)} training frames; pass 1 <= phase.val_holdout < {len(train)}")
    held = spread_frames(len(train), holdout)
    rest = [k for k in range(len(train)) if k not in set(held)]
    log.info("fit: no val split in %s: holding out training frames %s as validation", data_cfg.path, held)
    return subset(train, rest), subset(train, held), "held-out train frames"


PHASE = FitPhase
