"""What the Compose nodes share: their socket types, menu category and the shape of a text input."""
from __future__ import annotations

SHARDS = "SHARDS"
SHARD_GATE = "SHARD_GATE"
CATEGORY = "UnlearnKit/Compose"


class ComposeNode:
    """Base of every Compose node: its place in the node menu."""

    CATEGORY = CATEGORY


def text_input(tooltip: str, default: str = "") -> tuple[str, dict]:
    """A STRING widget with a default and a tooltip."""
    return ("STRING", {"default": default, "tooltip": tooltip})
