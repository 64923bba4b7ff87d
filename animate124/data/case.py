"""Benchmark cases in the Animate124 benchmark layout (spec §11.3) and the prompts derived from a caption.

```
<root>/benchmark.json            [{"name": ..., "caption": ...}, ...]
<root>/<name>/image.jpg          the raw input picture (with background; may be a PNG with a .jpg name)
<root>/<name>/rgba.png           optional: background removed (preferred as the reference image)
<root>/<name>/depth.png          optional: MiDaS disparity, 0 outside the mask
<root>/<name>/learned_embeds.bin optional: the textual-inversion token ({token: tensor[768]}); TI is then skipped
```

Prompts (spec §11.3, §7.3, §7.6): static = "a high-resolution DSLR image of " + the subject phrase (e.g. "a panda");
dynamic = the caption; ControlNet = the caption with the subject noun replaced by the TI token
("a _panda_dance_ is dancing").

Example:
    >>> case = load_case(CaseConfig(name="panda-dance", root="/data/animate124-benchmark"))
    >>> case.caption, case.static_prompt
    ('a panda is dancing', 'a high-resolution DSLR image of a panda')
"""

from __future__ import annotations

import dataclasses
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from animate124.config.schema import CaseConfig
from animate124.errors import InputError

BENCHMARK_FILE = "benchmark.json"
STATIC_PREFIX = "a high-resolution DSLR image of "
_ARTICLES = {"a", "an", "the"}
_WORD = re.compile(r"[A-Za-z0-9][A-Za-z0-9'-]*")


@dataclass(frozen=True)
class Case:
    """One benchmark case with the paths that exist in its folder."""

    name: str
    """Folder name, e.g. ``panda-dance``."""
    folder: Path
    """``<root>/<name>``."""
    caption: str
    """The motion caption from benchmark.json."""
    raw_image: Path
    """``image.jpg``: the raw picture with background (textual inversion trains on it, spec §3)."""
    image: Path
    """The reference image: ``rgba.png`` when present, else ``image.jpg``."""
    depth: Path | None
    """``depth.png`` or None."""
    learned_embeds: Path | None
    """``learned_embeds.bin`` (or ``.safetensors``) or None."""
    subject: str
    """The subject noun phrase as it appears in the caption (e.g. ``panda``, ``space shuttle``)."""

    @property
    def static_prompt(self) -> str:
        """Prompt of the static phase: the DSLR prefix + the caption up to the subject ("... of a panda")."""
        return STATIC_PREFIX + subject_phrase(self.caption, self.subject)

    @property
    def prompt(self) -> str:
        """Prompt of the video phases: the caption."""
        return self.caption

    def token_prompt(self, token: str) -> str:
        """ControlNet prompt: the caption with the subject replaced by ``token``."""
        return replace_subject(self.caption, self.subject, token)


def find_subject(caption: str, hints: list[str] | tuple[str, ...] = ()) -> str:
    """The subject noun (phrase) of a caption.

    With ``hints`` (e.g. the words of the case name ``space-shuttle`` → [space, shuttle]) the longest run of consecutive
    caption words that are all hints wins, then a caption word containing a hint ("Clownfish" for "fish").
    Without a match: the first word that is not an article and not hyphenated ("a full-bodied cat" → "cat").

    Args:
        caption: e.g. "a panda is dancing".
        hints: lower-case candidate words.

    Returns:
        The subject exactly as spelled in the caption.

    Raises:
        InputError: for an empty caption.
    """
    words = _WORD.findall(caption)
    if not words:
        raise InputError(f"caption {caption!r} has no words; give a caption like 'a panda is dancing'")
    hints_l = [h.lower() for h in hints if h]
    best: tuple[int, int] | None = None
    i = 0
    while i < len(words):
        j = i
        while j < len(words) and words[j].lower() in hints_l:
            j += 1
        if j > i and (best is None or j - i > best[1] - best[0]):
            best = (i, j)
        i = max(j, i + 1)
    if best is not None:
        return " ".join(words[best[0]:best[1]])
    for w in words:
        if any(h in w.lower() for h in hints_l):
            return w
    for w in words:
        if w.lower() not in _ARTICLES and "-" not in w:
            return w
    return words[-1]


def _subject_span(caption: str, subject: str) -> tuple[int, int]:
    """Character span of the first whole-word occurrence of ``subject`` in ``caption`` (case-insensitive)."""
    parts = [re.escape(p) for p in subject.split()]
    m = re.search(r"\b" + r"[\s,]+".join(parts) + r"\b", caption, flags=re.IGNORECASE)
    if m is None:
        raise InputError(f"subject {subject!r} does not occur in caption {caption!r}; pass a subject that does")
    return m.start(), m.end()


def subject_phrase(caption: str, subject: str) -> str:
    """The caption up to and including the subject ("a full-bodied tiger standing ..." → "a full-bodied tiger")."""
    return caption[: _subject_span(caption, subject)[1]].strip(" ,")


def replace_subject(caption: str, subject: str, token: str) -> str:
    """Replace the first occurrence of ``subject`` in ``caption`` by ``token`` ("a panda is dancing" → "a _p_ is dancing")."""
    start, end = _subject_span(caption, subject)
    return caption[:start] + token + caption[end:]


def read_benchmark(root: str | Path) -> dict[str, str]:
    """``{name: caption}`` from ``<root>/benchmark.json``.

    Raises:
        InputError: when the root or the file is missing or malformed.
    """
    root = Path(root)
    if not root.is_dir():
        raise InputError(f"benchmark root {root} does not exist; set case.root=<folder with benchmark.json>")
    path = root / BENCHMARK_FILE
    if not path.is_file():
        raise InputError(f"{path} not found; case.root must point at the Animate124 benchmark folder")
    try:
        items = json.loads(path.read_text())
        return {str(it["name"]): str(it["caption"]) for it in items}
    except (ValueError, TypeError, KeyError) as exc:
        raise InputError(f"{path} is not a list of {{name, caption}} objects ({exc}); fix the file") from exc


def load_case(cfg: CaseConfig) -> Case | None:
    """Resolve ``case=NAME`` into paths and a caption (None when no case is selected).

    Raises:
        InputError: unknown case, missing root/folder or missing image.
    """
    if not cfg.name:
        return None
    captions = read_benchmark(cfg.root)
    if cfg.name not in captions:
        known = ", ".join(sorted(captions)[:6])
        raise InputError(f"case {cfg.name!r} is not in {Path(cfg.root) / BENCHMARK_FILE}; pick one of: {known}, ...")
    folder = Path(cfg.root) / cfg.name
    raw = folder / "image.jpg"
    rgba = folder / "rgba.png"
    if not raw.is_file() and not rgba.is_file():
        raise InputError(f"case folder {folder} has neither image.jpg nor rgba.png; restore the benchmark files")
    embeds = next((p for p in (folder / "learned_embeds.bin", folder / "learned_embeds.safetensors") if p.is_file()), None)
    caption = captions[cfg.name]
    subject = cfg.subject or find_subject(caption, re.split(r"[-_\s]+", cfg.name.lower()))
    _subject_span(caption, subject)  # validate early: a user-given subject must occur in the caption
    return Case(
        name=cfg.name,
        folder=folder,
        caption=caption,
        raw_image=raw if raw.is_file() else rgba,
        image=rgba if rgba.is_file() else raw,
        depth=(folder / "depth.png") if (folder / "depth.png").is_file() else None,
        learned_embeds=embeds,
        subject=subject,
    )


def apply_case(cfg: Any) -> Any:
    """A copy of a RunConfig whose ``image`` / ``prompt`` / ``static_prompt`` come from ``cfg.case`` where not given.

    Explicit ``image=`` / ``prompt=`` / ``static_prompt=`` win over the case's. Without a case, ``cfg`` is returned.
    """
    case = load_case(cfg.case)
    if case is None:
        return cfg
    return dataclasses.replace(
        cfg,
        image=cfg.image or str(case.image),
        prompt=cfg.prompt or case.prompt,
        static_prompt=cfg.static_prompt or case.static_prompt,
    )
