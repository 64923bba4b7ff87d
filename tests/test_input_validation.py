"""Inputs that used to run silently (issue 15 §5): empty alpha, tiny objects, unquoted non-ASCII prompts, long prompts."""

import logging

import numpy as np
import pytest
from PIL import Image

from animate124.data.reference import MIN_MASK_AREA, MIN_OBJECT_PX, load_reference
from animate124.errors import InputError
from animate124.run import main


def _rgba(path, size, box=None):
    arr = np.zeros((size, size, 4), np.uint8)
    arr[..., :3] = 200
    if box is not None:
        y0, y1, x0, x1 = box
        arr[y0:y1, x0:x1, 3] = 255
    Image.fromarray(arr, "RGBA").save(path)
    return path


def test_empty_alpha_mask(tmp_path):
    path = _rgba(tmp_path / "empty.png", 64)
    load_reference(path)  # loading alone stays permissive (tools, previews)
    with pytest.raises(InputError, match=r"has an empty alpha mask .* no object to train on; run `python -m "
                                         r"animate124.preprocess image="):
        load_reference(path, check=True)


def test_tiny_picture(tmp_path):
    path = tmp_path / "tiny.png"
    Image.fromarray(np.full((4, 4, 4), 255, np.uint8), "RGBA").save(path)
    with pytest.raises(InputError, match=rf"only 4x4 px .* at least {MIN_OBJECT_PX} px across: give a larger picture"):
        load_reference(path, check=True)


def test_small_mask_area(tmp_path):
    # 16 px across but a 1-px-wide line: enough extent, too little area (16 / 512² ≪ MIN_MASK_AREA)
    path = _rgba(tmp_path / "line.png", 512, box=(100, 101, 100, 100 + MIN_OBJECT_PX))
    with pytest.raises(InputError, match=r"covers only 0.01% of the picture .*crop the picture around the object"):
        load_reference(path, check=True)


def test_a_normal_object_passes(tmp_path):
    ref = load_reference(_rgba(tmp_path / "ok.png", 64, box=(16, 48, 20, 44)), check=True)
    assert ref.size == 64 and 32 * 24 / 64**2 > MIN_MASK_AREA


def test_static_phase_rejects_an_empty_mask_with_one_line(tmp_path, capsys):
    path = _rgba(tmp_path / "empty.png", 64)
    code = main(["phase=static", "models=tiny", "field=small", "render=fast", f"image={path}", "prompt=a ball",
                 f"run_dir={tmp_path / 'run'}", "phase.progress=false"])
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert code == 2 and len(err) == 1 and "empty alpha mask" in err[0], err


def test_unquoted_non_ascii_prompt_says_how_to_quote(tmp_path, capsys):
    code = main(["phase=fit", "prompt=熊猫", "dancing", f"run_dir={tmp_path}"])
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert code == 2 and len(err) == 1, err
    assert "LexerNoViableAltException" in err[0]
    assert "write \"prompt='熊猫 dancing'\"" in err[0]


def test_quoted_non_ascii_prompt_composes():
    from hydra import compose, initialize_config_module

    import animate124.config.store  # noqa: F401

    with initialize_config_module("animate124.configs", version_base="1.3"):
        cfg = compose("run", overrides=["phase=fit", "prompt='熊猫 dancing'"])
    assert cfg.prompt == "熊猫 dancing"


def test_long_prompt_is_truncated_with_one_warning(caplog):
    from animate124.guidance import models as M

    tok = M.tiny_tokenizer()  # byte-level: one token per character (+ start/end)
    long = "a panda is dancing " * 10
    encoder = M.tiny_text_encoder()
    with caplog.at_level(logging.WARNING, logger="animate124.guidance.models"):
        emb = M.encode_prompts(tok, encoder, [long, "a cat"])
        M.encode_prompts(tok, encoder, [long])  # the same prompt again: no second warning
    assert emb.shape[:2] == (2, 77)
    warnings = [r.message for r in caplog.records if "is truncated after" in r.message]
    assert len(warnings) == 1 and "the text encoder reads 77" in warnings[0], warnings
