"""How the ComfyUI web frontend (1.32.9, the one ComfyUI 0.3.75 pins) sizes and places nodes, for checking
the saved example workflows without a browser — and, run as a script, for re-laying them out.

A node's minimal drawn size is LiteGraph's ``LGraphNode.computeSize`` (frontend 1.32.9): rows of sockets
(inputs that are not widgets, or outputs, whichever are more) × 20 px, plus every visible widget's height
+ 4 px (single-line widgets 20 px, multiline text 50 px; an INT named seed / noise_seed or with
``control_after_generate`` adds its control widget), plus 8 px under the widgets, plus 6 px; at least 210 px
wide with widgets (140 without). The frontend draws a node at max(saved size, minimal size) and its 30 px
title bar above ``pos``. ``bench/comfy_frontend.py`` measured these sizes in the real frontend
(``data/frontend-1.32.9.json``); ``test_workflow_layout.py`` checks the rule reproduces every measurement.

    python tests/frontend/workflow_layout.py example_workflows/*.json          # report
    python tests/frontend/workflow_layout.py --fix example_workflows/*.json    # grow nodes, resolve overlaps
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
MEASURED = HERE / "data" / "frontend-1.32.9.json"
TITLE, SLOT, WIDGET, MULTILINE, WIDGET_GAP, NODE_WIDTH = 30, 20, 20, 50, 4, 140
BADGE = 22  # a custom node's source badge ("UnlearnKit") is drawn 2 + 20 px above its title bar
WIDGET_TYPES = ("INT", "FLOAT", "STRING", "BOOLEAN", "COMBO")
# widgets the frontend's own extensions add to a node type, beyond its input spec (PreviewAny's text box)
FRONTEND_WIDGETS = {"PreviewAny": [MULTILINE], "UnlearnKitShowText": [MULTILINE]}
GAP = 20  # px kept free between nodes by --fix (the frontend draws badges and link dots at the edges)

PACK_PROBE = r"""
import importlib.util, json, sys
root = sys.argv[1]
spec = importlib.util.spec_from_file_location("ComfyUI-UnlearnKit", root + "/__init__.py",
                                              submodule_search_locations=[root])
pack = importlib.util.module_from_spec(spec)
sys.modules["ComfyUI-UnlearnKit"] = pack
spec.loader.exec_module(pack)
out = {}
for name, cls in pack.NODE_CLASS_MAPPINGS.items():
    out[name] = {"input": cls.INPUT_TYPES(), "output": list(cls.RETURN_TYPES),
                 "output_name": list(getattr(cls, "RETURN_NAMES", cls.RETURN_TYPES)),
                 "output_tooltips": getattr(cls, "OUTPUT_TOOLTIPS", None)}
print(json.dumps(out, default=str))
"""


def pack_specs(root: Path = REPO) -> dict:
    """The pack's nodes as ComfyUI's /object_info describes them (inputs, outputs, output tooltips), read by
    importing the pack without ComfyUI (its node modules import the host only inside functions)."""
    proc = subprocess.run([sys.executable, "-c", PACK_PROBE, str(root)], capture_output=True, text=True,
                          timeout=300, cwd=root.parent)
    if proc.returncode != 0:
        raise RuntimeError(f"importing the pack failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def measured() -> dict:
    return json.loads(MEASURED.read_text())


def core_types() -> dict:
    """The measured node types that are built into ComfyUI (custom nodes' python module is custom_nodes.*)."""
    return {t: v for t, v in measured()["types"].items()
            if not str(v.get("python_module", "custom_nodes" if t.startswith("UnlearnKit") else "nodes"))
            .startswith("custom_nodes")}


def inputs(spec: Mapping) -> list[tuple[str, object, dict]]:
    """(name, type, options) of every required and optional input."""
    out = []
    for group in ("required", "optional"):
        for name, entry in (spec.get("input", {}).get(group) or {}).items():
            kind = entry[0] if isinstance(entry, (list, tuple)) else entry
            options = entry[1] if isinstance(entry, (list, tuple)) and len(entry) > 1 else {}
            out.append((name, kind, options or {}))
    return out


def is_widget(kind: object, options: dict) -> bool:
    return (isinstance(kind, (list, tuple)) or kind in WIDGET_TYPES) and not options.get("forceInput")


def widget_heights(name: str, kind: object, options: dict) -> list[int]:
    """Heights of the widgets one widget input draws (with its control-after-generate widget, if any)."""
    first = MULTILINE if kind == "STRING" and options.get("multiline") else WIDGET
    control = options.get("control_after_generate", kind == "INT" and name in ("seed", "noise_seed"))
    return [first, WIDGET] if control else [first]


def min_size(spec: Mapping, node_type: str = "") -> tuple[int, int]:
    """LiteGraph's computeSize for a node of this spec (width: the frontend's floor, without text widths)."""
    ins = inputs(spec)
    sockets = sum(not is_widget(kind, opt) for _, kind, opt in ins)
    widgets = [h for name, kind, opt in ins if is_widget(kind, opt) for h in widget_heights(name, kind, opt)]
    widgets += FRONTEND_WIDGETS.get(node_type, [])
    rows = max(sockets, len(spec.get("output", [])), 1)
    height = rows * SLOT + (sum(h + WIDGET_GAP for h in widgets) + 8 if widgets else 0) + 6
    return (int(NODE_WIDTH * 1.5) if widgets else NODE_WIDTH), height


def specs() -> dict:
    """Node type -> spec: the pack's current definitions and the measured core nodes."""
    return {**core_types(), **pack_specs()}


def drawn_size(node: Mapping, spec: Mapping | None) -> tuple[float, float]:
    """What the frontend draws: max(saved size, minimal size) per axis (the saved size when the type is
    unknown)."""
    saved = node.get("size") or [0, 0]
    if isinstance(saved, Mapping):  # very old workflows save {"0": w, "1": h}
        saved = [saved["0"], saved["1"]]
    if spec is None:
        return float(saved[0]), float(saved[1])
    need = min_size(spec, node.get("type", ""))
    return max(float(saved[0]), need[0]), max(float(saved[1]), need[1])


def rect(node: Mapping, size: tuple[float, float], badge: bool = False) -> tuple[float, float, float, float]:
    """(left, top, right, bottom) of a drawn node: its title bar (and a custom node's badge) above pos, its
    body below."""
    x, y = node["pos"][0], node["pos"][1]
    return x, y - TITLE - (BADGE if badge else 0), x + size[0], y + size[1]


def has_badge(node_type: str, core: Mapping) -> bool:
    """The frontend's default badge mode shows the source of every node that is not built in."""
    return node_type not in core and node_type not in ("Note", "MarkdownNote", "Reroute", "PrimitiveNode")


def overlapping(boxes: Mapping[int, tuple], gap: float = 0) -> list[tuple[int, int]]:
    """Pairs of node ids whose rectangles (grown by ``gap``) intersect."""
    ids = sorted(boxes)
    out = []
    for i, a in enumerate(ids):
        for b in ids[i + 1:]:
            (l1, t1, r1, b1), (l2, t2, r2, b2) = boxes[a], boxes[b]
            if min(r1, r2) - max(l1, l2) > -gap and min(b1, b2) - max(t1, t2) > -gap:
                out.append((a, b))
    return out


def layout_problems(workflow: Mapping, known: Mapping, core: Mapping) -> list[str]:
    """What the frontend would draw wrongly: nodes saved smaller than drawn, overlapping nodes (title bars and
    badges included)."""
    problems, boxes = [], {}
    for node in workflow["nodes"]:
        spec = known.get(node["type"])
        size = drawn_size(node, spec)
        boxes[node["id"]] = rect(node, size, has_badge(node["type"], core))
        saved = node.get("size")
        if spec is not None and (size[0] > saved[0] or size[1] > saved[1]):
            problems.append(f"{node['type']} #{node['id']}: saved {list(saved)}, drawn {list(size)}")
    problems += [f"nodes #{a} and #{b} overlap" for a, b in overlapping(boxes)]
    return problems


def bounds(workflow: Mapping, known: Mapping, core: Mapping) -> tuple[float, float, float, float]:
    """(left, top, width, height) of every drawn node, padded by 10 px as the frontend's createBounds does."""
    boxes = [rect(n, drawn_size(n, known.get(n["type"])), has_badge(n["type"], core))
             for n in workflow["nodes"]]
    left, top = min(b[0] for b in boxes) - 10, min(b[1] for b in boxes) - 10
    return left, top, max(b[2] for b in boxes) + 10 - left, max(b[3] for b in boxes) + 10 - top


def fit_view_scale(workflow: Mapping, known: Mapping, core: Mapping, viewport: tuple[int, int]) -> float:
    """The zoom "Fit view" picks (frontend DragAndScale.animateToBounds: 75 % of the window, max scale 10)."""
    _, _, width, height = bounds(workflow, known, core)
    return min(0.75 * viewport[0] / max(width, 300), 0.75 * viewport[1] / max(height, 300), 10.0)


def saved_view_corner(workflow: Mapping, known: Mapping, core: Mapping) -> tuple[float, float, float]:
    """(scale, screen x, screen y) of the graph's top-left corner in the saved view (``extra.ds``)."""
    ds = workflow.get("extra", {}).get("ds", {"scale": 1.0, "offset": [0, 0]})
    left, top, _, _ = bounds(workflow, known, core)
    scale, (ox, oy) = float(ds["scale"]), ds["offset"]
    return scale, (left + 10 + ox) * scale, (top + 10 + oy) * scale


def fix(workflow: dict, known: Mapping, core: Mapping, gap: float = GAP) -> dict:
    """Grow every node to its drawn size, then push nodes down (in order of position) until none overlap."""
    nodes = sorted(workflow["nodes"], key=lambda n: (n["pos"][1], n["pos"][0]))
    placed: dict[int, tuple] = {}
    for node in nodes:
        node["size"] = [round(v) for v in drawn_size(node, known.get(node["type"]))]
        badge = has_badge(node["type"], core)
        while True:
            box = rect(node, node["size"], badge)
            hits = [placed[i] for a, i in overlapping({-1: box, **placed}, gap) if a == -1]
            if not hits:
                break
            node["pos"][1] = max(b for _, _, _, b in hits) + gap + TITLE + (BADGE if badge else 0)
        placed[node["id"]] = rect(node, node["size"], badge)
    return workflow


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("workflows", nargs="+")
    p.add_argument("--fix", action="store_true", help="rewrite the files with grown, non-overlapping nodes")
    args = p.parse_args()
    known, core = specs(), core_types()
    for path in map(Path, args.workflows):
        workflow = json.loads(path.read_text())
        if args.fix:
            path.write_text(json.dumps(fix(workflow, known, core), indent=2) + "\n")
        for line in layout_problems(workflow, known, core):
            print(f"{path.name}: {line}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
