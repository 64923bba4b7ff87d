"""Building fields, the static → dynamic hand-off and shape-checked state loading."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor

from animate124.config.schema import FieldConfig
from animate124.errors import CheckpointError
from animate124.fields.encodings import GridEncoding, Hash4DEncoding
from animate124.fields.grid_field import GridField

_FIX = ("build the field with the field config the checkpoint was written with (field.kind, field.keyframes, "
        "field.num_levels, field.features_per_level, field.log2_table_size, ...), or start a dynamic field from a "
        "static checkpoint with fields.init_dynamic_from_static")


def build_field(cfg: FieldConfig, dynamic: bool) -> GridField:
    """The field of a phase: static = keyframe grid with K = 1; dynamic = ``cfg.kind`` (keyframe_grid or hash4d).

    Args:
        cfg: field config.
        dynamic: whether the phase animates the scene.

    Returns:
        A freshly initialised :class:`GridField` on the CPU.
    """
    return GridField(cfg, dynamic=dynamic)


def _check_same_shape(name: str, got: Tensor, want: Tensor, skip_dims: int = 0, where: str = "the checkpoint") -> None:
    """Raise CheckpointError naming both full shapes unless they agree after the first ``skip_dims`` dims."""
    if tuple(got.shape[skip_dims:]) != tuple(want.shape[skip_dims:]):
        raise CheckpointError(f"field tensor '{name}' has shape {tuple(got.shape)} in {where} but this field "
                              f"expects {tuple(want.shape)}; fix: {_FIX}")


def init_dynamic_from_static(static: GridField, cfg: FieldConfig) -> GridField:
    """A dynamic field that renders exactly like ``static`` at every τ (spec §4.4, without its buffer bug).

    keyframe_grid: every keyframe table is a copy of the static table (one broadcast copy); hash4d: the 3D grid is
    copied and the 4D grid set to zero. The MLP is copied in both cases. The result is on ``static``'s device.

    Args:
        static: a trained static field (K = 1).
        cfg: field config of the dynamic phase (its spatial layout must match the static one).

    Returns:
        The new dynamic :class:`GridField`.

    Raises:
        CheckpointError: when the layouts differ (names both shapes).
        ValueError: when ``static`` is already dynamic.
    """
    if static.is_dynamic:
        raise ValueError("init_dynamic_from_static expects a static field (one keyframe table)")
    dyn = build_field(cfg, dynamic=True).to(static.device)
    assert isinstance(static.encoding, GridEncoding)  # a static field is one keyframe table
    src = static.encoding.embeddings
    with torch.no_grad():
        if isinstance(dyn.encoding, Hash4DEncoding):
            dst = dyn.encoding.grid3d.embeddings
            _check_same_shape("encoding.grid3d.embeddings", src, dst, where="the static field")
            dyn.encoding.grid3d.embeddings.copy_(src)
            dyn.encoding.grid4d.embeddings.zero_()
        else:
            dst = dyn.encoding.embeddings
            _check_same_shape("encoding.embeddings", src, dst, skip_dims=1, where="the static field")
            dst.copy_(src.expand_as(dst))
        for name, value in static.mlp.state_dict().items():
            _check_same_shape(f"mlp.{name}", value, dyn.mlp.state_dict()[name], where="the static field")
        dyn.mlp.load_state_dict(static.mlp.state_dict())
    return dyn


def load_field_state(field: GridField, state_dict: Mapping[str, Tensor]) -> None:
    """Load a field's state dict, raising a one-line CheckpointError on any key or shape mismatch.

    Args:
        field: the field to load into (built from the current config).
        state_dict: its saved ``state_dict()`` (keys without a prefix).

    Raises:
        CheckpointError: a tensor whose shape differs (both shapes named), or missing/unexpected keys.
    """
    own = field.state_dict()
    for name in sorted(own.keys() & state_dict.keys()):
        _check_same_shape(name, state_dict[name], own[name])
    missing, unexpected = sorted(own.keys() - state_dict.keys()), sorted(state_dict.keys() - own.keys())
    if missing or unexpected:
        raise CheckpointError(f"field checkpoint keys do not match this field (missing {missing}, unexpected "
                              f"{unexpected}); fix: {_FIX}")
    field.load_state_dict(dict(state_dict))
