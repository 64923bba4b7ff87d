"""format=viewer without a browser: the folder's files, the atlas layout and metadata, the size guard."""

import json
from pathlib import Path

import numpy as np
import pytest
from _export_toys import fast_render_cfg, full_occupancy, toy_field
from PIL import Image

from animate124.config.export import ExportConfig
from animate124.errors import InputError
from animate124.export.outputs import export
from animate124.export.scene import Scene
from animate124.export.viewer import ASSETS, DATA_VAR, atlas_layout


def viewer_scene(tmp_path: Path) -> Scene:
    img = tmp_path / "input.png"
    Image.fromarray(np.full((40, 30, 4), [200, 30, 30, 255], np.uint8)).save(img)
    return Scene(field=toy_field(), occupancy=full_occupancy(), render_cfg=fast_render_cfg(max_steps=64),
                 inputs={"image": str(img), "prompt": "a red <blob> & a green one"}, phase="fit", config={},
                 checkpoint=Path("."))


def viewer_cfg(tmp_path: Path, views: int = 8, times: int = 3, size: int = 24) -> ExportConfig:
    cfg = ExportConfig(run_dir=str(tmp_path), format="viewer", out=str(tmp_path / "viewer"), progress=False,
                       device="cpu")
    cfg.viewer.views, cfg.viewer.times, cfg.viewer.size = views, times, size
    return cfg


def read_meta(folder: Path) -> dict:
    text = (folder / "viewer_data.js").read_text()
    prefix = f"window.{DATA_VAR} = "
    assert text.startswith(prefix) and text.rstrip().endswith(";")
    return json.loads(text[len(prefix):].rstrip().rstrip(";"))


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("viewer_files")
    return tmp / "viewer", export(viewer_cfg(tmp, views=10), viewer_scene(tmp))


def test_viewer_folder_files_and_metadata(built):
    out, written = built
    assert out / "index.html" in written and (out / "viewer.js").is_file() and (out / "input.png").is_file()
    meta = read_meta(out)
    assert (meta["views"], meta["times"], meta["size"], meta["cols"], meta["rows"]) == (10, 3, 24, 8, 2)
    assert meta["taus"] == [0.0, 0.5, 1.0] and meta["azimuths"][1] == 36.0
    assert meta["prompt"] == "a red <blob> & a green one" and meta["input_image"] == "input.png"
    for name in meta["atlas"]:
        with Image.open(out / name) as im:
            assert im.size == (8 * 24, 2 * 24)
    html = (out / "index.html").read_text()
    assert "http://" not in html and "https://" not in html  # no CDN: works offline
    assert 'src="viewer_data.js"' in html and 'src="viewer.js"' in html
    assert "fetch(" not in (out / "viewer.js").read_text()  # file:// pages cannot fetch local files


def test_atlas_tiles_differ_by_view_and_time(built):
    out, _ = built
    a0 = np.asarray(Image.open(out / "atlas" / "t000.jpg"), np.float32)
    a1 = np.asarray(Image.open(out / "atlas" / "t002.jpg"), np.float32)
    tiles = [a0[:24, k * 24:(k + 1) * 24] for k in range(8)]
    assert np.abs(tiles[0] - tiles[2]).mean() > 1.0 and np.abs(a0 - a1).mean() > 0.5  # azimuth and τ both show


def test_atlas_size_guard_and_bad_grid(tmp_path):
    cfg = viewer_cfg(tmp_path, views=1, times=1, size=8)
    cfg.viewer.max_mb = 1e-6
    with pytest.raises(InputError, match="viewer.max_mb"):
        export(cfg, viewer_scene(tmp_path))
    with pytest.raises(InputError, match="viewer.views"):
        export(viewer_cfg(tmp_path, views=0), viewer_scene(tmp_path))


def test_layout_and_assets_are_package_data():
    assert atlas_layout(24) == (8, 3) and atlas_layout(5) == (5, 1)
    assert (ASSETS / "index.html").is_file() and (ASSETS / "viewer.js").is_file()
