"""Checkpoints: atomic write, keep-last-N, optimizer/RNG round trip, corrupt files, config compatibility."""

import random

import numpy as np
import pytest
import torch

from animate124.errors import CheckpointError
from animate124.io.checkpoint import (
    check_compatible,
    latest_checkpoint,
    list_checkpoints,
    load_checkpoint,
    merge_states,
    save_checkpoint,
    set_rng_state,
    split_state,
    structural_hash,
)
from animate124.io.run_dir import load_inputs, phase_done, save_inputs, write_json_atomic


def _model():
    torch.manual_seed(1)
    return torch.nn.Sequential(torch.nn.Linear(3, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))


def _adam_steps(model, opt, xs):
    for x in xs:
        opt.zero_grad()
        model(x).pow(2).sum().backward()
        opt.step()


def test_atomic_write_ignores_temp_and_keeps_last_n(tmp_path):
    model = _model()
    for step in (10, 20, 30):
        save_checkpoint(tmp_path, step, merge_states({"net": model}), None, {"phase": "fit"}, keep=2)
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step-0000020", "step-0000030"]
    # A crash mid-write leaves a temp dir (and maybe a step dir without state.json): both are ignored.
    (tmp_path / ".tmp-step-0000040-123").mkdir()
    (tmp_path / "step-0000050").mkdir()
    assert latest_checkpoint(tmp_path).name == "step-0000030"
    assert latest_checkpoint(tmp_path / "nothing") is None
    # Saving the same step twice replaces it.
    save_checkpoint(tmp_path, 30, merge_states({"net": model}), None, {"phase": "again"}, keep=2)
    assert load_checkpoint(latest_checkpoint(tmp_path))[2]["phase"] == "again"


def test_adam_resume_is_bitwise_identical(tmp_path):
    xs = [torch.randn(4, 3) for _ in range(6)]
    ref = _model()
    ref_opt = torch.optim.Adam(ref.parameters(), lr=1e-2, betas=(0.9, 0.99), eps=1e-15)
    _adam_steps(ref, ref_opt, xs)

    model = _model()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2, betas=(0.9, 0.99), eps=1e-15)
    _adam_steps(model, opt, xs[:3])
    path = save_checkpoint(tmp_path, 3, merge_states({"net": model}), opt.state_dict(), {}, keep=1)

    resumed = _model()
    with torch.no_grad():  # scramble, so the load must restore everything
        for p in resumed.parameters():
            p.add_(1.0)
    resumed_opt = torch.optim.Adam(resumed.parameters(), lr=1.0)
    model_state, optim_state, state = load_checkpoint(path)
    resumed.load_state_dict(split_state(model_state, "net"))
    resumed_opt.load_state_dict(optim_state)
    assert state["step"] == 3 and resumed_opt.param_groups[0]["lr"] == 1e-2
    _adam_steps(resumed, resumed_opt, xs[3:])
    for a, b in zip(ref.parameters(), resumed.parameters()):
        assert torch.equal(a, b)


def test_rng_state_round_trip(tmp_path):
    torch.manual_seed(5)
    random.seed(5)
    np.random.seed(5)
    path = save_checkpoint(tmp_path, 1, {}, None, {}, keep=1)
    expected = (torch.rand(3), random.random(), np.random.rand())
    torch.manual_seed(0)
    random.seed(0)
    np.random.seed(0)
    set_rng_state(load_checkpoint(path)[2]["rng"])
    got = (torch.rand(3), random.random(), np.random.rand())
    assert torch.equal(expected[0], got[0]) and expected[1:] == got[1:]


@pytest.mark.parametrize("damage", ["truncate_model", "delete_optim", "bad_json"])
def test_corrupt_checkpoint_raises_checkpoint_error(tmp_path, damage):
    path = save_checkpoint(tmp_path, 7, merge_states({"net": _model()}), None, {}, keep=1)
    if damage == "truncate_model":
        (path / "model.safetensors").write_bytes(b"\x10\x00\x00")
    elif damage == "delete_optim":
        (path / "optim.safetensors").unlink()
    else:
        (path / "state.json").write_text("{not json")
    with pytest.raises(CheckpointError, match=str(path).replace("\\", "\\\\") + ".*delete it"):
        load_checkpoint(path)


def test_incompatible_config_names_the_difference(tmp_path):
    saved = {"field": {"num_levels": 16, "hidden_dim": 64}, "render": {"grid_resolution": 128}, "seed": 1}
    same_shapes = {"field": {"num_levels": 16, "hidden_dim": 64}, "render": {"grid_resolution": 128}, "seed": 2}
    check_compatible(saved, same_shapes, tmp_path)  # a seed change does not change shapes
    assert structural_hash(saved) == structural_hash(same_shapes)
    changed = {"field": {"num_levels": 8, "hidden_dim": 64}, "render": {"grid_resolution": 128}}
    with pytest.raises(CheckpointError, match=r"field.num_levels 16 vs 8.*new run_dir="):
        check_compatible(saved, changed, tmp_path)


def test_inputs_and_phase_done(tmp_path):
    assert load_inputs(tmp_path)["prompt"] is None
    save_inputs(tmp_path, prompt="a cat is waving", case="cat")
    save_inputs(tmp_path, static_prompt="a cat")
    inputs = load_inputs(tmp_path)
    assert inputs["prompt"] == "a cat is waving" and inputs["static_prompt"] == "a cat" and inputs["case"] == "cat"
    assert not phase_done(tmp_path, "static")
    write_json_atomic(tmp_path / "static" / "report.json", {"complete": False})
    assert not phase_done(tmp_path, "static")
    write_json_atomic(tmp_path / "static" / "report.json", {"complete": True})
    assert phase_done(tmp_path, "static")


# ------------------------------------------------------------------------------------ the training loop (toy phase)
def _toy(run_dir, max_steps=8, nan_at=None, interrupt_at=None):
    from animate124.config.phases import FitPhaseConfig
    from animate124.config.schema import RunConfig
    from animate124.phases.base import Phase, StepOutput

    class Toy(Phase):
        name = "toy"

        def build(self):
            self.field = torch.nn.Linear(3, 2)
            self.optimizer = torch.optim.Adam(self.field.parameters(), lr=1e-2)

        def train_step(self, step):
            if step == interrupt_at:
                raise KeyboardInterrupt
            loss = self.field(torch.randn(4, 3)).pow(2).mean()  # draws from the global RNG: resume must restore it
            return StepOutput(loss * float("nan") if step == nan_at else loss, {"x": 1.0})

    cfg = RunConfig(phase=FitPhaseConfig(max_steps=max_steps, checkpoint_every=3, progress=False), seed=7)
    return Toy(cfg, run_dir)


def test_loop_interrupt_then_resume_is_bitwise(tmp_path):
    from animate124.phases.base import TrainingInterrupted, train

    ref = _toy(tmp_path / "ref")
    report = train(ref)
    assert report["complete"] and report["step"] == 8 and report["start_step"] == 0

    with pytest.raises(TrainingInterrupted, match="interrupted at step 5; .*re-run the same command to resume"):
        train(_toy(tmp_path / "run", interrupt_at=5))
    assert latest_checkpoint(tmp_path / "run" / "toy" / "checkpoints").name == "step-0000005"
    assert not phase_done(tmp_path / "run", "toy")
    resumed = _toy(tmp_path / "run")
    report = train(resumed)
    assert report["start_step"] == 5 and report["step"] == 8 and report["sessions"] == 2
    assert phase_done(tmp_path / "run", "toy")
    for a, b in zip(ref.field.parameters(), resumed.field.parameters()):
        assert torch.equal(a, b)


def test_loop_nan_loss_saves_last_good_state(tmp_path):
    from animate124.errors import Animate124Error
    from animate124.phases.base import NonFiniteLossError, train

    with pytest.raises(NonFiniteLossError, match="loss became nan at step 4.*step-0000004") as info:
        train(_toy(tmp_path, nan_at=4))
    assert isinstance(info.value, Animate124Error)
    model_state, _, state = load_checkpoint(latest_checkpoint(tmp_path / "toy" / "checkpoints"))
    assert state["step"] == 4 and all(torch.isfinite(v).all() for v in model_state.values())
