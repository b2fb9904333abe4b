"""Load every example workflow in the real ComfyUI 0.3.75 web frontend (1.32.9) in headless Chromium and read
back what it draws: node sizes against the saved ones, overlaps, widgets cut off or covered, nodes under the
frontend's own UI in the saved view, the fit-view scale against the level where text stops being drawn, the
template browser's cards; with ``--run`` it also queues each graph and screenshots the outputs.

    OMP_NUM_THREADS=1 python bench/comfy_frontend.py --json [--run] [--save-sizes tests/frontend/data/...]

Needs Debian's chromium (/usr/bin/chromium) and Playwright's Python package (no browser download). Writes
screenshots and report.json to --out; the last stdout line is one JSON object: per workflow, its findings.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent))

from comfy_server import REPO, Server, get_json  # noqa: E402

log = logging.getLogger("bench.comfy_frontend")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
PROBE = (Path(__file__).resolve().parent / "frontend_probe.js").read_text()
DISPLAY_TYPES = ("PreviewAny", "PreviewImage", "SaveImage", "ImageScaleBy", "ImageUpscaleWithModel", "Note",
                 "MarkdownNote", "PrimitiveStringMultiline", "UnlearnKitShowText")


def probe(page, name: str, *args):
    return page.evaluate(f"(args) => ({PROBE})[{name!r}](...args)", list(args))


def rects(nodes: list[dict], title: int) -> dict:
    """Node id -> (left, top, right, bottom) of what is drawn: the title bar above pos, the body below."""
    return {n["id"]: (n["pos"][0], n["pos"][1] - title, n["pos"][0] + n["size"][0],
                      n["pos"][1] + n["size"][1]) for n in nodes}


def overlaps(boxes: dict) -> list[tuple]:
    out = []
    ids = sorted(boxes)
    for i, a in enumerate(ids):
        for b in ids[i + 1:]:
            (l1, t1, r1, b1), (l2, t2, r2, b2) = boxes[a], boxes[b]
            w, h = min(r1, r2) - max(l1, l2), min(b1, b2) - max(t1, t2)
            if w > 0 and h > 0:
                out.append((a, b, round(w), round(h)))
    return out


def hidden_widgets(nodes: list[dict], boxes: dict) -> list[str]:
    """Widgets drawn below their node's bottom edge or under another node's rectangle."""
    out = []
    for n in nodes:
        for w in n["widgets"]:
            if not w["visible"] or w["y"] is None:
                continue
            top = n["pos"][1] + w["y"]
            bottom = top + (w["height"] or 20)
            if bottom > n["pos"][1] + n["size"][1] + 1:
                out.append(f"{n['type']} #{n['id']} {w['name']}: below the node's edge")
            for other, (left, t, right, b) in boxes.items():
                inside = left < n["pos"][0] + n["size"][0] and right > n["pos"][0] and t < bottom and b > top
                if other != n["id"] and inside:
                    out.append(f"{n['type']} #{n['id']} {w['name']}: under node #{other}")
    return out


def undisplayed_outputs(workflow: dict) -> list[str]:
    """STRING outputs of the pack's nodes that reach no display node, IMAGE outputs that reach nothing."""
    types = {n["id"]: n["type"] for n in workflow["nodes"]}
    out = []
    for n in workflow["nodes"]:
        if not n["type"].startswith("UnlearnKit") or n["type"] == "UnlearnKitShowText":
            continue
        for o in n.get("outputs", []):
            shown = [types[link[3]] for link in workflow["links"] if link[1] == n["id"] and link[2] ==
                     n["outputs"].index(o)]
            if (o["type"] == "STRING" and not any(t in DISPLAY_TYPES for t in shown)) or (
                    o["type"] == "IMAGE" and not shown):  # images may feed a node that uses them
                out.append(f"{n['type']} #{n['id']} output {o['name']} ({o['type']}) reaches no display node")
    return out


def load(page, workflow: dict, name: str) -> None:
    page.evaluate("([wf, name]) => window.app.loadGraphData(wf, true, true, name)", [workflow, name])
    page.wait_for_timeout(1500)


def fit_view(page) -> dict:
    page.evaluate("() => window.app.extensionManager.command.execute('Comfy.Canvas.FitView')")
    page.wait_for_timeout(1200)
    return probe(page, "view")


def run_graph(page, url: str, timeout_s: float) -> float:
    """Queue the loaded graph and wait until the server's queue is empty; returns seconds."""
    start = time.perf_counter()
    page.evaluate("() => window.app.queuePrompt(0, 1)")
    page.wait_for_timeout(1000)
    while time.perf_counter() - start < timeout_s:
        queue = get_json(f"{url}/queue")
        if not queue["queue_running"] and not queue["queue_pending"]:
            break
        time.sleep(1)
    page.wait_for_timeout(1500)
    return round(time.perf_counter() - start, 1)


def inspect_workflow(page, path: Path, out: Path, constants: dict, url: str, run: bool) -> dict:
    workflow = json.loads(path.read_text())
    name = path.stem
    load(page, workflow, name)
    nodes = probe(page, "nodes")
    boxes = rects(nodes, constants["title"])
    saved = {n["id"]: n["size"] for n in workflow["nodes"]}
    report = {
        "saved_view": probe(page, "view"),
        "grown": [f"{n['type']} #{n['id']}: saved {saved[n['id']]} drawn {[round(v) for v in n['size']]}"
                  for n in nodes if any(d > s + 0.5 for d, s in zip(n["size"], saved[n["id"]]))],
        "overlaps": overlaps(boxes),
        "hidden_widgets": hidden_widgets(nodes, boxes),
        "under_ui_in_saved_view": [f"#{v['id']} {v['title']} {v['body']}" for v in probe(page, "visibility")
                                   if set(v["title"] + v["body"]) != {"visible"}],
        "undisplayed_outputs": undisplayed_outputs(workflow),
        "nodes": nodes,
    }
    page.screenshot(path=str(out / f"{name}_saved_view.png"))
    report["fit_view"] = fit_view(page)
    report["fit_view_low_quality"] = report["fit_view"]["scale"] < (constants["lowQuality"] or 0)
    page.screenshot(path=str(out / f"{name}_fit_view.png"))
    if run:
        report["run_seconds"] = run_graph(page, url, 600)
        page.screenshot(path=str(out / f"{name}_after_run.png"))
    return report


def template_browser(page, out: Path) -> list[dict]:
    page.evaluate("() => window.app.extensionManager.command.execute('Comfy.BrowseTemplates')")
    page.wait_for_timeout(3000)
    page.screenshot(path=str(out / "template_browser.png"))
    return probe(page, "templateCards")


def type_sizes(page, url: str, workflows: list[Path]) -> dict:
    """Minimal drawn size and input spec of every pack node and every core node the workflows use."""
    info = get_json(f"{url}/object_info")
    used = {n["type"] for p in workflows for n in json.loads(p.read_text())["nodes"]}
    types = sorted(t for t in info if t.startswith("UnlearnKit") or t in used or t in DISPLAY_TYPES)
    sizes = probe(page, "typeSizes", types)
    return {t: {**sizes[t], "input": info[t]["input"], "input_order": info[t].get("input_order"),
                "python_module": info[t].get("python_module"),
                "output": info[t]["output"], "output_tooltips": info[t].get("output_tooltips")}
            for t in types if t in info and sizes.get(t)}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    p.add_argument("--run", action="store_true", help="also queue each workflow and screenshot its outputs")
    p.add_argument("--out", default="unlearnkit-out/frontend")
    p.add_argument("--workflows", nargs="*",
                   default=sorted(str(f) for f in (REPO / "example_workflows").glob("*.json")))
    p.add_argument("--viewport", default="1600x900")
    p.add_argument("--chromium", default="/usr/bin/chromium")
    p.add_argument("--save-sizes", default=None, help="write the measured node sizes (tests' reference data)")
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
    from playwright.sync_api import sync_playwright

    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    width, height = (int(v) for v in args.viewport.split("x"))
    workflows = [Path(w) for w in args.workflows]
    result: dict = {"viewport": [width, height]}
    with Server(out / "work") as url, sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=args.chromium, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": width, "height": height})
        page.add_init_script("localStorage.setItem('vueNodesBannerDismissed', 'true')")
        page.goto(url, wait_until="domcontentloaded")
        page.wait_for_function("window.app && window.app.graph && window.LiteGraph", timeout=180000)
        page.wait_for_timeout(3000)
        result["constants"] = probe(page, "constants")
        result["workflows"] = {w.stem: inspect_workflow(page, w, out, result["constants"], url, args.run)
                               for w in workflows}
        result["templates"] = template_browser(page, out)
        if args.save_sizes:
            sizes = {"frontend": result["constants"]["version"], "comfyui": "0.3.75",
                     "constants": result["constants"], "types": type_sizes(page, url, workflows)}
            Path(args.save_sizes).write_text(json.dumps(sizes, indent=1, sort_keys=True) + "\n")
        browser.close()
    (out / "report.json").write_text(json.dumps(result, indent=1))
    summary = {name: {k: v for k, v in r.items() if k != "nodes"} for name, r in result["workflows"].items()}
    if not args.json:
        print(json.dumps(summary, indent=1))
    print(json.dumps({"templates": result["templates"], "workflows": summary}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
