"""Convert a ComfyUI UI workflow (the frontend's saved JSON: nodes + links) to the API prompt format.

What the frontend's graphToPrompt does, for the parts example workflows use: widget values
in INPUT_TYPES order (a seed-like INT carries an extra 'control after generate' value, an
upload combo an extra upload value), links, Reroute and PrimitiveNode, muted nodes dropped,
notes skipped. Bypassed nodes, groups nodes and subgraphs are refused.
"""
from __future__ import annotations

from collections.abc import Callable

WIDGET_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"}
SEED_NAMES = {"seed", "noise_seed"}  # 2024-03 frontend: these INTs always get a control widget
UPLOAD_OPTIONS = ("image_upload", "video_upload", "audio_upload", "upload")
NOTE_TYPES = {"Note", "MarkdownNote"}
MODE_MUTED, MODE_BYPASSED = 2, 4

InputTypes = Callable[[str], dict]  # class_type -> its INPUT_TYPES() dict


def is_ui_workflow(graph: dict) -> bool:
    return isinstance(graph.get("nodes"), list) and isinstance(graph.get("links"), list)


def widget_slots(spec: dict) -> list[tuple[str, int]]:
    """(input name, number of widgets_values it takes) for each widget input, in frontend order."""
    slots = []
    for section in ("required", "optional"):
        for name, entry in (spec.get(section) or {}).items():
            kind = entry[0]
            options = entry[1] if len(entry) > 1 and isinstance(entry[1], dict) else {}
            if not (isinstance(kind, list) or kind in WIDGET_TYPES):
                continue
            extra = 0
            if kind == "INT" and (name in SEED_NAMES or options.get("control_after_generate")):
                extra = 1
            if any(options.get(k) for k in UPLOAD_OPTIONS):
                extra = 1
            slots.append((name, 1 + extra))
    return slots


def _widget_inputs(node: dict, spec: dict) -> dict:
    values = node.get("widgets_values") or []
    if isinstance(values, dict):  # some nodes save widgets by name
        return {name: values[name] for name, _ in widget_slots(spec) if name in values}
    out, i = {}, 0
    for name, width in widget_slots(spec):
        if i >= len(values):
            break
        out[name] = values[i]
        i += width
    return out


def to_api_prompt(workflow: dict, input_types: InputTypes) -> dict:
    """API-format prompt {id: {"class_type", "inputs"}} of a UI workflow."""
    if workflow.get("definitions", {}).get("subgraphs"):
        raise ValueError("UI workflow: subgraphs are not supported by the test converter")
    nodes = {str(n["id"]): n for n in workflow["nodes"]}
    links = {link[0]: (str(link[1]), link[2]) for link in workflow["links"]}

    def source(link_id: int):
        """Follow Reroutes back to a real output; a PrimitiveNode yields its value."""
        node_id, slot = links[link_id]
        node = nodes[node_id]
        if node["type"] == "Reroute":
            return source(node["inputs"][0]["link"])
        if node["type"] == "PrimitiveNode":
            return (node.get("widgets_values") or [None])[0]
        if node.get("mode") == MODE_BYPASSED:
            raise ValueError(f"UI workflow: node {node_id} ({node['type']}) is bypassed; not supported")
        return [node_id, slot]

    prompt = {}
    for node_id, node in nodes.items():
        kind = node["type"]
        if (
            kind in NOTE_TYPES
            or kind in ("Reroute", "PrimitiveNode")
            or node.get("mode") in (MODE_MUTED, MODE_BYPASSED)
        ):
            continue
        inputs = _widget_inputs(node, input_types(kind))
        for entry in node.get("inputs") or []:
            if entry.get("link") is not None:
                inputs[entry["name"]] = source(entry["link"])
        prompt[node_id] = {"class_type": kind, "inputs": inputs}
    return prompt
