"""Re-lay out the example workflows for the ComfyUI web frontend and re-make their template thumbnails.

Run after adding or changing a workflow in ``example_workflows/`` (and after a node's inputs change):

    python -m unlearnkit demo                   # the report whose panels become the thumbnails
    python bench/relayout_workflows.py          # rewrites example_workflows/*.json and *.jpg

It renames a snake_case file to a readable name (``TITLES``, else the name as a sentence; a file still under
its old name, e.g. from a merge, replaces the renamed one); adds a Show Text on every text output of the
pack's nodes (in front of its readers), a preview on every unused image output and a 6x nearest-neighbour
copy of every VAE Decode; saves every node at the size the frontend draws it (tests/frontend/
workflow_layout.py) in reading order (a node's inputs before it, its displays right after it), cut into
columns at the height that keeps "Fit view" on 1600x900 largest, no node on another; saves a view with the
graph's corner beside the frontend's bars; makes NAME.jpg from a demo panel (bench/workflow_thumbnails.py).
Ids, links, titles and widget values are kept; running it twice changes nothing. Prints one JSON line.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path[:0] = [str(HERE), str(REPO / "tests" / "frontend")]

import workflow_layout as wl  # noqa: E402
import workflow_thumbnails as thumbs  # noqa: E402

TITLES = {  # old file name -> readable file name (the card's title)
    "tinyworld_compose_slider_mix": "Compose style shards with sliders",
    "tinyworld_compose_gated_attribution": "Compose with a gate and attribution",
    "slug_erase_style": "Unlearn a style with SLUG",
    "erase_style_in_graph": "Erase a style with AdvUnlearn",
}
TEXT_DISPLAYS = ("UnlearnKitShowText", "PreviewAny")
DISPLAYS = (*TEXT_DISPLAYS, "PreviewImage", "SaveImage", "ImageScaleBy")
SCALE = 6.0  # 16 px images shown 96 px
VIEWPORT, SIDEBAR, TOP_BARS, MINIMAP = (1600, 900), 70, 100, 260  # px of the window: the minimap's width
COLUMN_GAP, ROW_GAP, MIN_WIDTH, NOTE_WIDTH = 40, 12, 260, 360


def readable_name(stem: str) -> str:
    if stem in TITLES:
        return TITLES[stem]
    if "_" not in stem and " " in stem:
        return stem
    words = stem.replace("-", " ").replace("_", " ").split()
    return " ".join([words[0].capitalize(), *words[1:]])


def by_id(w: dict) -> dict:
    return {n["id"]: n for n in w["nodes"]}


def add_node(w: dict, ntype: str, title: str, inputs=(), outputs=(), widgets=()) -> int:
    nid = max(n["id"] for n in w["nodes"]) + 1
    w["nodes"].append({
        "id": nid, "type": ntype, "title": title, "pos": [0, 0], "size": [MIN_WIDTH, 100], "flags": {},
        "order": nid, "mode": 0, "inputs": [{"name": a, "type": t, "link": None} for a, t in inputs],
        "outputs": [{"name": a, "type": t, "links": [], "slot_index": i} for i, (a, t) in enumerate(outputs)],
        "properties": {"Node name for S&R": ntype}, "widgets_values": list(widgets)})
    w["last_node_id"] = max(w.get("last_node_id", 0), nid)
    return nid


def add_link(w: dict, src: int, slot: int, dst: int, dst_slot: int, kind: str) -> None:
    lid = max([x[0] for x in w["links"]] + [w.get("last_link_id", 0)]) + 1
    w["links"].append([lid, src, slot, dst, dst_slot, kind])
    nodes = by_id(w)
    out = nodes[src]["outputs"][slot]
    out["links"] = (out.get("links") or []) + [lid]
    nodes[dst]["inputs"][dst_slot]["link"] = lid
    w["last_link_id"] = lid


def consumers(w: dict, nid: int, slot: int) -> list[list]:
    return [x for x in w["links"] if x[1] == nid and x[2] == slot]


def sync_outputs(w: dict, known: dict) -> None:
    """Saved nodes get the outputs their current spec has (a new output of a pack node)."""
    for node in w["nodes"]:
        spec = known.get(node["type"])
        outs = node.setdefault("outputs", [])
        if spec and node["type"].startswith("UnlearnKit"):
            names = spec.get("output_name") or spec["output"]
            outs += [{"name": names[k], "type": spec["output"][k], "links": [], "slot_index": k}
                     for k in range(len(outs), len(spec["output"]))]


def show_text_outputs(w: dict) -> None:
    """A Show Text on every text output of the pack's nodes that reaches none (in front of its readers)."""
    for node in list(w["nodes"]):
        if not node["type"].startswith("UnlearnKit") or node["type"] in TEXT_DISPLAYS:
            continue
        for slot, out in enumerate(node["outputs"]):
            links = consumers(w, node["id"], slot)
            if out["type"] != "STRING" or any(by_id(w)[x[3]]["type"] in TEXT_DISPLAYS for x in links):
                continue
            title = out["name"].replace("_", " ").capitalize()
            show = add_node(w, "UnlearnKitShowText", title, [("text", "STRING")], [("text", "STRING")])
            for x in links:  # readers now read the shown text (Show Text passes it on)
                w["links"].remove(x)
                by_id(w)[x[3]]["inputs"][x[4]]["link"] = None
                add_link(w, show, 0, x[3], x[4], "STRING")
            out["links"] = []
            add_link(w, node["id"], slot, show, 0, "STRING")


def image_displays(w: dict) -> None:
    """A preview on every image output of the pack's nodes that reaches nothing; a 6x nearest-neighbour
    copy of every decoded image."""
    for node in list(w["nodes"]):
        for slot, out in enumerate(node.get("outputs", [])):
            pack_image = node["type"].startswith("UnlearnKit") and out["type"] == "IMAGE"
            if pack_image and not consumers(w, node["id"], slot):
                preview = add_node(w, "PreviewImage", out["name"].replace("_", " ").capitalize(),
                                   [("images", "IMAGE")])
                add_link(w, node["id"], slot, preview, 0, "IMAGE")
        readers = [by_id(w)[x[3]]["type"] for x in consumers(w, node["id"], 0)]
        if node["type"] == "VAEDecode" and "ImageScaleBy" not in readers:
            saves = [by_id(w)[x[3]] for x in consumers(w, node["id"], 0)]
            named = [s["title"] for s in saves if s.get("title")]
            title = f"{named[0]} x{SCALE:g}" if named else f"Images x{SCALE:g}"
            scale = add_node(w, "ImageScaleBy", f"x{SCALE:g} for display (nearest)", [("image", "IMAGE")],
                             [("IMAGE", "IMAGE")], ["nearest-exact", SCALE])
            add_link(w, node["id"], 0, scale, 0, "IMAGE")
            add_link(w, scale, 0, add_node(w, "PreviewImage", title, [("images", "IMAGE")]), 0, "IMAGE")


def reading_order(w: dict) -> list[int]:
    """Nodes in the order a user reads the graph: a node's inputs before it, its displays right after it;
    notes first, then every sink's inputs (by id)."""
    nodes = by_id(w)
    preds = {i: sorted({x[1] for x in w["links"] if x[3] == i}) for i in nodes}
    succs = {i: sorted({x[3] for x in w["links"] if x[1] == i}) for i in nodes}
    order: list[int] = []

    def place(i: int) -> None:
        if i in order:
            return
        for p in preds[i]:
            place(p)
        if i in order:  # placed as a display of one of its inputs
            return
        order.append(i)
        for s in succs[i]:
            if nodes[s]["type"] in DISPLAYS and all(p in order for p in preds[s]):
                place(s)

    for i in sorted(nodes, key=lambda i: (nodes[i]["type"] not in ("Note", "MarkdownNote"), i)):
        if not succs[i]:
            place(i)
    return order + [i for i in sorted(nodes) if i not in order]


def display_size(w: dict, node: dict) -> tuple[int, int] | None:
    """The size a display node is saved at: large enough to read what it shows."""
    preds = [by_id(w)[x[1]]["type"] for x in w["links"] if x[3] == node["id"]]
    if node["type"] in ("PreviewImage", "SaveImage"):
        if "ImageScaleBy" in preds:
            return 280, 250  # 96 px images
        return (330, 330) if any(p.startswith("UnlearnKit") for p in preds) else (260, 150)  # plots | 16 px
    if node["type"] in TEXT_DISPLAYS:
        return 300, 130
    return None


def note_height(text: str, width: int) -> int:
    per_line = max(1, (width - 20) // 7)  # the frontend's note text: about 7 px a character
    lines = sum(1 + len(part) // per_line for part in text.split("\n"))
    return 40 + 17 * lines


def sizes(w: dict, known: dict) -> dict[int, list[int]]:
    """Node id -> saved size: at least what the frontend draws (and room for the title), displays larger."""
    out = {}
    for node in w["nodes"]:
        spec = known.get(node["type"])
        need = wl.min_size(spec, node["type"]) if spec else tuple(node.get("size") or (MIN_WIDTH, 100))
        measured = wl.measured()["types"].get(node["type"], {}).get("min", [0, 0])
        width = max(MIN_WIDTH, need[0], measured[0], 60 + 8 * len(node.get("title") or node["type"]))
        if node["type"] in ("Note", "MarkdownNote"):
            width = NOTE_WIDTH
            out[node["id"]] = [width, note_height(str((node.get("widgets_values") or [""])[0]), width)]
            continue
        shown = display_size(w, node) or (0, 0)
        out[node["id"]] = [max(width, shown[0]), max(need[1], shown[1])]
    return out


def columns(order: list[int], heights: dict[int, float], limit: float) -> list[list[int]]:
    """The reading order cut into columns no taller than ``limit`` (a taller node gets its own)."""
    cols, used = [[]], 0.0
    for i in order:
        if cols[-1] and used + heights[i] > limit:
            cols.append([])
            used = 0.0
        cols[-1].append(i)
        used += heights[i]
    return cols


def place(w: dict, known: dict, core: dict) -> None:
    """Sizes, then the column height whose layout "Fit view" shows largest; positions written back."""
    size = sizes(w, known)
    nodes, order = by_id(w), reading_order(w)
    above = {i: wl.TITLE + (wl.BADGE if wl.has_badge(nodes[i]["type"], core) else 0) for i in nodes}
    heights = {i: above[i] + size[i][1] + ROW_GAP for i in nodes}
    best = None
    for limit in range(500, 2400, 20):
        cols = columns(order, heights, limit)
        widths = [max(size[i][0] for i in col) for col in cols]
        width = sum(widths) + COLUMN_GAP * (len(cols) - 1) + 20
        height = max(sum(heights[i] for i in col) for col in cols) - ROW_GAP + 20
        scale = min(0.75 * VIEWPORT[0] / width, 0.75 * VIEWPORT[1] / height)
        if best is None or scale > best[0] + 1e-9:
            best = (scale, cols, widths)
    _, cols, widths = best
    x = 0
    for col, col_width in zip(cols, widths):
        y = 0
        for i in col:
            nodes[i]["pos"] = [x, y + above[i]]
            nodes[i]["size"] = [col_width, size[i][1]]
            y += heights[i]
        x += col_width + COLUMN_GAP


def saved_view(w: dict, known: dict, core: dict) -> None:
    """The whole graph in view when it fits (else its top-left part), its corner beside the sidebar and
    under the top bars, its right edge left of the minimap (bottom right)."""
    left, top, width, height = wl.bounds(w, known, core)
    floor = wl.measured()["constants"]["lowQuality"] + 0.03
    room = (VIEWPORT[0] - MINIMAP - SIDEBAR - 20, VIEWPORT[1] - TOP_BARS - 40)
    scale = round(max(floor, min(1.0, room[0] / width, room[1] / height)), 3)
    corner = (SIDEBAR + 20, TOP_BARS + 20)
    w.setdefault("extra", {})["ds"] = {"scale": scale, "offset": [round(corner[0] / scale - left - 10, 1),
                                                                  round(corner[1] / scale - top - 10, 1)]}


def relayout(w: dict, known: dict, core: dict) -> dict:
    sync_outputs(w, known)
    show_text_outputs(w)
    image_displays(w)
    place(w, known, core)
    saved_view(w, known, core)
    return w


def rename(folder: Path) -> dict[str, str]:
    """Old file names -> readable ones; the old file (a newer version, from a merge) replaces the new."""
    moved = {}
    for path in sorted(folder.glob("*.json")):
        target = path.with_name(readable_name(path.stem) + ".json")
        if target != path:
            path.replace(target)
            path.with_suffix(".jpg").unlink(missing_ok=True)
            moved[path.name] = target.name
    return moved


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--workflows", default=str(REPO / "example_workflows"))
    p.add_argument("--report", default=str(REPO / "unlearnkit-out" / "demo"),
                   help="the demo report whose panels become the thumbnails (python -m unlearnkit demo)")
    args = p.parse_args()
    folder = Path(args.workflows)
    moved = rename(folder)
    known, core = wl.specs(), wl.core_types()
    problems, made, no_panel = {}, {}, []
    for path in sorted(folder.glob("*.json")):
        w = relayout(json.loads(path.read_text(encoding="utf-8")), known, core)
        path.write_text(json.dumps(w, indent=2) + "\n", encoding="utf-8")
        found = thumbs.panel_for(path.stem)
        panel = Path(args.report) / found[0] if found else None
        if panel is not None and panel.is_file():
            thumbs.card(thumbs.Image.open(panel), anchor=found[1]).save(path.with_suffix(".jpg"), "JPEG",
                                                                         quality=88)
            made[path.name] = found[0]
        else:
            no_panel.append(path.name)
        fit = wl.fit_view_scale(w, known, core, VIEWPORT)
        found_problems = wl.layout_problems(w, known, core)
        if fit < wl.measured()["constants"]["lowQuality"]:
            found_problems.append(f"fit view {fit:.3f} is below the frontend's text threshold")
        problems[path.name] = found_problems
    print(json.dumps({"renamed": moved, "thumbnails": made, "no_panel": no_panel, "problems": problems}))
    return 1 if any(problems.values()) or no_panel else 0


if __name__ == "__main__":
    sys.exit(main())
