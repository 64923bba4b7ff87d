"""Cameras, the time-sliced occupancy grid and the volume renderer (DESIGN.md §2)."""

from animate124.render.cameras import (
    Cameras,
    c2w_to_spherical,
    get_rays,
    look_at,
    moving_trajectory,
    orbit,
    reference_camera,
    sample_random_views,
    spherical_to_c2w,
)
from animate124.render.occupancy import OccupancyGrid
from animate124.render.volume import SHADING_MODES, VolumeRenderer

__all__ = [
    "Cameras",
    "OccupancyGrid",
    "SHADING_MODES",
    "VolumeRenderer",
    "c2w_to_spherical",
    "get_rays",
    "look_at",
    "moving_trajectory",
    "orbit",
    "reference_camera",
    "sample_random_views",
    "spherical_to_c2w",
]
