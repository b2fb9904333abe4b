"""A concept of the tiny world — one digit or one style — and everything the tasks ask of it.

Every capability's tiny-world task names its concept the same way: ``Concept.parse("digit:7")``
(also "7", "seven", "digit 7", "style:bold", "bold", "bold style"). The concept knows its zero-shot
class prompts, its label in the images of a :class:`~unlearnkit.tinyworld.data.Subset`, the SD prompts
that name each class of its kind, and which judge decides whether a generated image shows it.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from .. import judges as tw_judges
from ..data import WORDS, Subset, caption
from ..styles import STYLES

KINDS = ("digit", "style")


def _kind_and_value(spec: str) -> tuple[str, str]:
    """"digit:7" / "digit 7" -> ("digit", "7"); "bold style" -> ("style", "bold"); "7" -> ("", "7")."""
    text = str(spec).strip().lower()
    if ":" in text:
        kind, _, value = text.partition(":")
        return kind.strip(), value.strip()
    words = text.split()
    if len(words) == 2 and words[1] == "style":
        return "style", words[0]
    if len(words) == 2:
        return words[0], words[1]
    return "", text


@dataclass(frozen=True)
class Concept:
    """One class of the tiny world: kind "digit" (index 0..9) or "style" (index into STYLES)."""

    kind: str
    index: int

    def __post_init__(self) -> None:
        limit = 10 if self.kind == "digit" else len(STYLES)
        if self.kind not in KINDS or not 0 <= int(self.index) < limit:
            raise ValueError(
                f"concept: expected kind in {KINDS} and index in 0..{limit - 1}, got "
                f"{self.kind!r}:{self.index}"
            )

    @classmethod
    def parse(cls, spec: str) -> Concept:
        """"digit:7", "7", "seven", "digit 7", "style:bold", "bold" or "bold style" -> Concept; ValueError
        otherwise."""
        kind, value = _kind_and_value(spec)
        if kind not in ("", *KINDS):
            raise ValueError(f"concept: kind must be one of {KINDS}, got {kind!r} in {spec!r}")
        if kind in ("", "digit") and value.isdigit() and len(value) == 1:
            return cls("digit", int(value))
        if kind in ("", "digit") and value in WORDS:
            return cls("digit", WORDS.index(value))
        if kind in ("", "style") and value in STYLES:
            return cls("style", STYLES.index(value))
        raise ValueError(f"concept: expected a tiny-world digit (0..9, 'digit:7') or style {STYLES} "
                         f"('style:bold', 'bold style'), got {spec!r}")

    @property
    def name(self) -> str:
        return f"digit {self.index}" if self.kind == "digit" else f"{STYLES[self.index]} style"

    @property
    def spec(self) -> str:
        return f"{self.kind}:{self.index if self.kind == 'digit' else STYLES[self.index]}"

    def class_prompts(self) -> list[str]:
        """Zero-shot prompts of every class of this concept's kind (the concept's own among them)."""
        return tw_judges.digit_prompts() if self.kind == "digit" else tw_judges.style_prompts()

    def labels(self, subset: Subset) -> torch.Tensor:
        """Each image's class index in ``class_prompts()`` order: (N,)."""
        return subset.digits if self.kind == "digit" else subset.styles

    def mask(self, subset: Subset) -> torch.Tensor:
        """(N,) True for images of this concept."""
        return self.labels(subset) == self.index

    def generation_prompts(self, per_class: int) -> tuple[list[str], torch.Tensor]:
        """SD prompts naming each class of this kind ``per_class`` times, and the class each names (judge
        labels).

        Digits: "a handwritten digit N"; styles: "a handwritten digit N in S style" over the 10 digits.
        """
        if per_class < 1:
            raise ValueError(f"per_class: expected >= 1, got {per_class}")
        if self.kind == "digit":
            labels = torch.arange(10).repeat_interleave(per_class)
            return [caption(int(d), None, 0) for d in labels], labels
        labels = torch.arange(len(STYLES)).repeat_interleave(per_class)
        return [caption(i % 10, STYLES[int(s)], 0) for i, s in enumerate(labels)], labels

    def judge(self) -> torch.nn.Module:
        """The tiny world's judge of this concept's kind (digit or style classifier)."""
        from .. import store

        return store.load_judge(self.kind)

    def hits(self, judge: torch.nn.Module, images: torch.Tensor) -> torch.Tensor:
        """Boolean (B,): ``judge`` assigns the image (B, 3, 16, 16) in [-1, 1] to this concept."""
        return tw_judges.predict(judge, images) == self.index

    def detector(self, judge: torch.nn.Module | None = None):
        """images -> bool (B,): the concept detector the judge-agnostic measurements take."""
        judge = self.judge() if judge is None else judge
        return lambda images: self.hits(judge, images)
