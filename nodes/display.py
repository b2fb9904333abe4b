"""Show Text: a text output (a gate's info, a patch path, a report, a warning) shown on the node itself.

ComfyUI only shows text a node returns under ``ui``; the pack's ``web/unlearnkit.js`` draws it in a read-only
text box on this node (in the 2024 and the current frontends alike). Works in every ComfyUI version, unlike
the core Preview Any node (0.3.x only).
"""
from __future__ import annotations

CATEGORY = "UnlearnKit/Utils"


class ShowTextNode:
    """STRING in -> the same STRING out, and shown on the node."""

    @classmethod
    def INPUT_TYPES(cls) -> dict:
        return {"required": {"text": ("STRING", {"forceInput": True,
                                                 "tooltip": "Any text output: a report, a path, a record."})}}

    RETURN_TYPES = ("STRING",)
    RETURN_NAMES = ("text",)
    OUTPUT_TOOLTIPS = ("The same text, passed on.",)
    OUTPUT_NODE = True
    FUNCTION = "show"
    CATEGORY = CATEGORY
    DESCRIPTION = "Show a text output on the node (reports, file paths, forget records, warnings)."

    def show(self, text: str) -> dict:
        return {"ui": {"text": [str(text)]}, "result": (str(text),)}
