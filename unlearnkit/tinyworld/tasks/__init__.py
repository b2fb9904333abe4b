"""The tiny world's tasks: each capability's job on the embedded default, with its judged measurements.

These modules sit above the capabilities (they import ``unlearnkit.compose`` / ``erase`` / ``unlearn``);
the capabilities never import the tiny world. One :class:`Concept` names what a task erases or forgets.
"""
from .concept import KINDS, Concept

__all__ = ["KINDS", "Concept"]
