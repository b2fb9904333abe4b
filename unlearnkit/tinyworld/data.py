"""Real handwriting (scikit-learn's 1,797 digits) as 16×16 RGB images with captions and fixed splits.

Sources (one source image = one 8×8 scan) are split once, by seed, into
  held-out (20 %)  - judges' and FID's reference, never trained on by generators
  public  (1/3 of the rest) - VAE and CLIP (all styles), base UNet (plain style only)
  private (the rest)        - each source rendered in ONE non-plain style (its "artist");
                              style shards = private by style, split shards = a random 8-way split.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from .styles import NON_PLAIN, STYLES, check_style, render

SIZE = 16
SEED = 0
HELD_OUT_FRACTION = 0.2
PUBLIC_FRACTION = 1 / 3
N_SPLIT_SHARDS = 8

WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
TEMPLATES = (
    "a handwritten digit {n}",
    "a handwritten digit {w}",
    "the number {w}",
    "a drawing of the digit {n}",
    "digit {n}",
)
STYLE_SUFFIX = " in {s} style"


def caption(digit: int, style: str | None, template: int = 0) -> str:
    """e.g. caption(7, "bold", 1) == "a handwritten digit seven in bold style"; style None: no suffix."""
    if not 0 <= int(digit) <= 9:
        raise ValueError(f"digit: expected 0..9, got {digit!r}")
    if not 0 <= template < len(TEMPLATES):
        raise ValueError(f"template: expected 0..{len(TEMPLATES) - 1}, got {template!r}")
    text = TEMPLATES[template].format(n=int(digit), w=WORDS[int(digit)])
    if style is not None:
        check_style(style)
        text += STYLE_SUFFIX.format(s=style)
    return text


def all_captions() -> list[str]:
    """Every caption the training can produce, plus "" (the unconditional prompt)."""
    out = [""]
    for d in range(10):
        for t in range(len(TEMPLATES)):
            out += [caption(d, s, t) for s in (None, *STYLES)]
    return out


def ink_maps(scans: np.ndarray) -> torch.Tensor:
    """8×8 scans in 0..16 -> (N, 16, 16) ink in [0, 1]: bilinear 14×14 upsampling + 1 px margin."""
    x = torch.from_numpy(scans.astype(np.float32) / 16.0).view(-1, 1, 8, 8)
    x = F.interpolate(x, size=(SIZE - 2, SIZE - 2), mode="bilinear", align_corners=False)
    return F.pad(x, (1, 1, 1, 1))[:, 0].clamp(0, 1)


@dataclass(frozen=True)
class Subset:
    """Rendered images with labels: images (N, 3, 16, 16) in [-1, 1], digits (N,), styles (N,) as indices."""

    images: torch.Tensor
    digits: torch.Tensor
    styles: torch.Tensor
    sources: torch.Tensor = field(repr=False)

    def __len__(self) -> int:
        return int(self.digits.shape[0])

    def where(self, mask: torch.Tensor) -> Subset:
        return Subset(self.images[mask], self.digits[mask], self.styles[mask], self.sources[mask])

    def of_style(self, style: str) -> Subset:
        check_style(style)
        return self.where(self.styles == STYLES.index(style))

    def of_digit(self, digit: int) -> Subset:
        if not 0 <= int(digit) <= 9:
            raise ValueError(f"digit: expected 0..9, got {digit!r}")
        return self.where(self.digits == int(digit))

    @staticmethod
    def concat(parts: list[Subset]) -> Subset:
        return Subset(
            *(torch.cat([getattr(p, f) for p in parts]) for f in ("images", "digits", "styles", "sources"))
        )


@dataclass(frozen=True)
class World:
    """The tiny world's data: source indices per role and the 8×8 scans' ink maps and digit labels."""

    ink: torch.Tensor  # (1797, 16, 16)
    labels: torch.Tensor  # (1797,)
    held_out: torch.Tensor  # source indices
    public: torch.Tensor
    private: torch.Tensor
    private_style: torch.Tensor  # style index (1..4) of each private source
    split_of: torch.Tensor  # split-shard index (0..7) of each private source

    def rendered(self, sources: torch.Tensor, style: str) -> Subset:
        """Sources rendered in one style."""
        n = len(sources)
        return Subset(
            render(self.ink[sources], style),
            self.labels[sources],
            torch.full((n,), STYLES.index(style)),
            sources,
        )

    def all_styles(self, sources: torch.Tensor) -> Subset:
        """Sources rendered in every style (5× as many images)."""
        return Subset.concat([self.rendered(sources, s) for s in STYLES])

    def held_out_set(self) -> Subset:
        return self.all_styles(self.held_out)

    def public_set(self, plain_only: bool = False) -> Subset:
        return self.rendered(self.public, "plain") if plain_only else self.all_styles(self.public)

    def private_set(self) -> Subset:
        """Every private source in its own (artist's) style."""
        return Subset.concat([self.style_shard(s) for s in NON_PLAIN])

    def style_shard(self, style: str) -> Subset:
        """Source of the style shard `style`: the private images drawn in that style."""
        if style not in NON_PLAIN:
            raise ValueError(f"style shard: expected one of {NON_PLAIN}, got {style!r}")
        return self.rendered(self.private[self.private_style == STYLES.index(style)], style)

    def split_shard(self, k: int) -> Subset:
        """Source of split shard k: a random 1/8 of the private images, each in its own style."""
        if not 0 <= int(k) < N_SPLIT_SHARDS:
            raise ValueError(f"split shard: expected 0..{N_SPLIT_SHARDS - 1}, got {k!r}")
        mine = self.split_of == int(k)
        return Subset.concat(
            [
                self.rendered(self.private[mine & (self.private_style == i)], s)
                for i, s in enumerate(STYLES)
                if i > 0
            ]
        )

    def shard_source(self, shard_set: str, name: str) -> Subset:
        """Training data of one shard: shard_set "style" (name = a style) or "split" (name = "split3")."""
        if shard_set == "style":
            return self.style_shard(name)
        if shard_set == "split":
            if not name.startswith("split") or not name[5:].isdigit():
                raise ValueError(
                    f"split shard name: expected 'split0'..'split{N_SPLIT_SHARDS - 1}', got {name!r}"
                )
            return self.split_shard(int(name[5:]))
        raise ValueError(f"shard_set: expected 'style' or 'split', got {shard_set!r}")


def shard_names(shard_set: str) -> tuple[str, ...]:
    if shard_set == "style":
        return NON_PLAIN
    if shard_set == "split":
        return tuple(f"split{k}" for k in range(N_SPLIT_SHARDS))
    raise ValueError(f"shard_set: expected 'style' or 'split', got {shard_set!r}")


def stratified_split(
    labels: np.ndarray, fraction: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Indices (taken, rest): `fraction` of each class taken at random."""
    taken = []
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        taken.append(idx[: int(round(fraction * len(idx)))])
    taken = np.sort(np.concatenate(taken))
    return taken, np.setdiff1d(np.arange(len(labels)), taken)


@functools.lru_cache(maxsize=2)
def load_world(seed: int = SEED) -> World:
    """The fixed splits of load_digits (deterministic for a seed)."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    labels = digits.target.astype(np.int64)
    rng = np.random.default_rng(seed)
    held_out, rest = stratified_split(labels, HELD_OUT_FRACTION, rng)
    pub_local, priv_local = stratified_split(labels[rest], PUBLIC_FRACTION, rng)
    public, private = rest[pub_local], rest[priv_local]
    private = rng.permutation(private)
    private_style = 1 + np.arange(len(private)) % len(NON_PLAIN)  # balanced artists
    split_of = rng.permutation(np.arange(len(private)) % N_SPLIT_SHARDS)
    t = torch.as_tensor
    return World(
        ink_maps(digits.images), t(labels), t(held_out), t(public), t(private), t(private_style), t(split_of)
    )
