"""Benchmark case reader (data/case.py) and the prompts derived from captions (spec §11.3)."""

import json

import pytest
from conftest import BENCHMARK, requires_benchmark
from hydra import compose, initialize_config_module
from omegaconf import OmegaConf

import animate124.config.store  # noqa: F401  (registers the schemas)
from animate124.config.schema import CaseConfig
from animate124.data.case import find_subject, load_case, replace_subject, subject_phrase
from animate124.errors import InputError


def _fake_root(tmp_path, with_extras=True):
    root = tmp_path / "bench"
    (root / "panda-dance").mkdir(parents=True)
    (root / "benchmark.json").write_text(json.dumps([{"name": "panda-dance", "caption": "a panda is dancing"}]))
    (root / "panda-dance" / "image.jpg").write_bytes(b"x")
    if with_extras:
        for f in ("rgba.png", "depth.png", "learned_embeds.bin"):
            (root / "panda-dance" / f).write_bytes(b"x")
    return root


def test_case_prefers_rgba_and_finds_extras(tmp_path):
    root = _fake_root(tmp_path)
    case = load_case(CaseConfig(name="panda-dance", root=str(root)))
    assert case.image.name == "rgba.png" and case.raw_image.name == "image.jpg"
    assert case.depth.name == "depth.png" and case.learned_embeds.name == "learned_embeds.bin"
    assert case.prompt == "a panda is dancing"
    assert case.static_prompt == "a high-resolution DSLR image of a panda"
    assert case.token_prompt("_panda_dance_") == "a _panda_dance_ is dancing"


def test_case_without_extras(tmp_path):
    root = _fake_root(tmp_path, with_extras=False)
    case = load_case(CaseConfig(name="panda-dance", root=str(root)))
    assert case.image.name == "image.jpg" and case.depth is None and case.learned_embeds is None


def test_no_case_is_none():
    assert load_case(CaseConfig()) is None


@pytest.mark.parametrize(
    "name, root_kind, match",
    [("nope", "ok", "not in"), ("panda-dance", "missing", "does not exist"), ("panda-dance", "nojson", "not found")],
)
def test_case_errors(tmp_path, name, root_kind, match):
    root = _fake_root(tmp_path)
    if root_kind == "missing":
        root = tmp_path / "absent"
    elif root_kind == "nojson":
        (root / "benchmark.json").unlink()
    with pytest.raises(InputError, match=match):
        load_case(CaseConfig(name=name, root=str(root)))


@pytest.mark.parametrize(
    "caption, hints, subject, phrase, replaced",
    [
        ("a space shuttle launching", ["space", "shuttle"], "space shuttle", "a space shuttle", "a <t> launching"),
        ("a Clownfish is swimming", ["fish"], "Clownfish", "a Clownfish", "a <t> is swimming"),
        ("a full-bodied cat is waving its paw", [], "cat", "a full-bodied cat", "a full-bodied <t> is waving its paw"),
        ("an astronaut, helmet in hand, rides a white horse", ["astronaut", "horse"], "astronaut", "an astronaut",
         "an <t>, helmet in hand, rides a white horse"),
    ],
)
def test_subject_rules(caption, hints, subject, phrase, replaced):
    assert find_subject(caption, hints) == subject
    assert subject_phrase(caption, subject) == phrase
    assert replace_subject(caption, subject, "<t>") == replaced


def test_explicit_subject_must_occur(tmp_path):
    with pytest.raises(InputError, match="does not occur"):
        load_case(CaseConfig(name="panda-dance", root=str(_fake_root(tmp_path)), subject="bear"))


@requires_benchmark
def test_real_benchmark_cases_compose_and_load():
    names = [it["name"] for it in json.loads((BENCHMARK / "benchmark.json").read_text())]
    assert len(names) == 24
    with initialize_config_module("animate124.configs", version_base="1.3"):
        for name in names:
            cfg = compose("run", overrides=[f"case={name}", f"case.root={BENCHMARK}"])
            case = load_case(OmegaConf.to_object(cfg).case)
            assert case.name == name and case.raw_image.is_file()
            assert case.token_prompt("_tok_") != case.caption
    panda = load_case(CaseConfig(name="panda-dance", root=str(BENCHMARK)))
    assert panda.learned_embeds is not None and panda.image.name == "rgba.png"
