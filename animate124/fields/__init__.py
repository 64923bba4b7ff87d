"""Radiance fields: multiresolution grid encodings (keyframe grids, hash4d) + MLP with exp density and a blob."""

from animate124.fields.encodings import GridEncoding, Hash4DEncoding, mask_levels
from animate124.fields.grid_field import GridField, level_weights, trunc_exp
from animate124.fields.transfer import build_field, init_dynamic_from_static, load_field_state

__all__ = [
    "GridEncoding",
    "GridField",
    "Hash4DEncoding",
    "build_field",
    "init_dynamic_from_static",
    "level_weights",
    "load_field_state",
    "mask_levels",
    "trunc_exp",
]
