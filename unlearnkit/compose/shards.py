"""Shard sets: named shards with slider priors and access tags (CDM §3).

Forgetting drops a shard — no weight derived from its data source is used afterwards — and
returns a record (which shard, which file hash, when). Access rights restrict a set to the
shards a principal may use; asking for any other is refused, never silently served.
"""
from __future__ import annotations

import datetime as _dt
import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from .. import io


@dataclass(frozen=True)
class Shard:
    """One shard: a model fine-tuned on one data source. ``model`` is opaque to the core."""

    name: str
    model: Any
    prior: float = 1.0
    tags: frozenset[str] = field(default_factory=frozenset)  # rights a principal needs (all of them)
    source: str = ""  # file the shard was loaded from, if any
    sha256: str = ""  # hash of that file, for forgetting records


@dataclass(frozen=True)
class ForgetRecord:
    """Verifiable trace of one forgetting: the shard, its file and hash, and when."""

    shard: str
    source: str
    sha256: str
    when: str
    remaining: tuple[str, ...]
    reason: str = ""

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)


def parse_tags(text: str) -> frozenset[str]:
    """'a, b c' -> {'a', 'b', 'c'}: tags separated by commas or spaces."""
    return frozenset(t for t in text.replace(",", " ").split() if t)


@dataclass(frozen=True)
class ShardSet:
    """An immutable, ordered set of shards with unique names."""

    shards: tuple[Shard, ...] = ()

    def __post_init__(self) -> None:
        names = [s.name for s in self.shards]
        for s in self.shards:
            if not s.name or not s.name.strip():
                raise ValueError("shard name: expected a non-empty name")
        dup = {n for n in names if names.count(n) > 1}
        if dup:
            raise ValueError(f"shard names must be unique; repeated: {sorted(dup)}")

    @property
    def names(self) -> list[str]:
        return [s.name for s in self.shards]

    @property
    def priors(self) -> list[float]:
        return [s.prior for s in self.shards]

    def __len__(self) -> int:
        return len(self.shards)

    def __iter__(self):
        return iter(self.shards)

    def get(self, name: str) -> Shard:
        for s in self.shards:
            if s.name == name:
                return s
        raise KeyError(f"shard {name!r}: not in this set (shards: {self.names})")

    def add(self, shard: Shard) -> ShardSet:
        """A new set with ``shard`` appended (the inputs are never mutated)."""
        return ShardSet(self.shards + (shard,))

    def extend(self, shards: Iterable[Shard]) -> ShardSet:
        return ShardSet(self.shards + tuple(shards))

    def with_prior(self, name: str, prior: float) -> ShardSet:
        self.get(name)
        return ShardSet(tuple(replace(s, prior=prior) if s.name == name else s for s in self.shards))

    def forget(self, name: str, reason: str = "") -> tuple[ShardSet, ForgetRecord]:
        """Drop shard ``name``: no retraining, nothing of its data left in the set (CDM §3)."""
        shard = self.get(name)
        rest = ShardSet(tuple(s for s in self.shards if s.name != name))
        if len(rest) == 0:
            raise ValueError(f"forget {name!r}: it is the only shard; nothing would be left to sample from")
        when = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
        return rest, ForgetRecord(name, shard.source, shard.sha256, when, tuple(rest.names), reason)

    def allowed(self, rights: Iterable[str]) -> list[str]:
        held = set(rights)
        return [s.name for s in self.shards if s.tags <= held]

    def restrict(self, rights: Iterable[str], requested: Iterable[str] | None = None) -> ShardSet:
        """The shards a principal holding ``rights`` may use; a request for any other is refused."""
        held = set(rights)
        if requested is not None:
            wanted = list(requested)
            for name in wanted:
                missing = sorted(self.get(name).tags - held)
                if missing:
                    raise PermissionError(
                        f"shard {name!r}: access refused; it requires rights {missing} that were not granted"
                    )
            subset = ShardSet(tuple(self.get(n) for n in wanted))
        else:
            subset = ShardSet(tuple(s for s in self.shards if s.tags <= held))
        if len(subset) == 0:
            raise PermissionError(f"rights {sorted(held)}: grant access to none of the shards {self.names}")
        return subset


def append_forget_log(path: str | Path, record: ForgetRecord) -> Path:
    """Append a record to a JSON-lines log, rewriting the file atomically."""
    path = Path(path)
    old = path.read_text() if path.exists() else ""
    text = old + ("" if not old or old.endswith("\n") else "\n") + record.to_json() + "\n"
    return io.atomic_write(path, lambda tmp: Path(tmp).write_text(text), overwrite=True)
