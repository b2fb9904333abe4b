"""Child process of the real-ComfyUI test harness: one engine, a batch of API-format graphs.

    python comfy_child.py REQUEST.json RESPONSE.json

REQUEST: {"comfy_root", "custom_nodes": [folders], "extras": [comfy_extras files], "out_dir",
"graphs": {name: API prompt or UI workflow}, optional "unload_between_graphs"}.
RESPONSE: {"engine", "load_failures", "results": {name: {"success", "errors", "seconds"}}}.
Fixture output nodes write files under out_dir/<name>/.
"""
from __future__ import annotations

import asyncio
import inspect
import json
import logging
import os
import sys
import time
import traceback

from ui_workflow import is_ui_workflow, to_api_prompt  # this file's folder, before setup_engine drops it

logger = logging.getLogger("unlearnkit.tests.comfy_child")
DEVICE_ENV = "UNLEARNKIT_COMFY_DEVICE"  # "cuda": ComfyUI picks its GPU (bench/real_size.py on a CUDA machine)


def _maybe_await(value):
    """ComfyUI 0.3.x made loaders and validation async; 2024-03 is sync."""
    return asyncio.run(value) if inspect.isawaitable(value) else value


class StandInServer:
    """The few attributes PromptExecutor uses of ComfyUI's PromptServer."""

    def __init__(self) -> None:
        self.client_id = None
        self.last_node_id = None
        self.sockets_metadata: dict = {}
        self.messages: list = []

    def send_sync(self, event, data, sid=None) -> None:
        self.messages.append(event)

    def queue_updated(self) -> None:
        pass


def setup_engine(comfy_root: str, custom_nodes: list[str], extras: list[str]) -> tuple[str, list[str]]:
    """Import ComfyUI on CPU and load custom node folders the way ComfyUI does; returns (version,
    failures)."""
    here = os.path.dirname(os.path.abspath(__file__))
    sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != here]
    sys.path.insert(0, comfy_root)
    import comfy.cli_args  # args parsing is off by default: the defaults, then CPU (unless a bench asks)

    comfy.cli_args.args.cpu = os.environ.get(DEVICE_ENV, "cpu") != "cuda"
    import comfy.model_management  # noqa: F401  (reads args.cpu at import)
    import folder_paths

    import nodes  # ComfyUI's nodes.py: comfy_root is first on sys.path

    tmp = os.path.dirname(custom_nodes[0]) if custom_nodes else comfy_root
    folder_paths.set_output_directory(os.path.join(tmp, "output"))
    folder_paths.set_temp_directory(os.path.join(tmp, "temp"))
    failures = []
    for name in extras:
        if not _maybe_await(nodes.load_custom_node(os.path.join(comfy_root, "comfy_extras", name))):
            failures.append(name)
    for path in custom_nodes:
        if not _maybe_await(nodes.load_custom_node(path)):
            failures.append(path)
    try:
        import comfyui_version

        version = comfyui_version.__version__
    except ImportError:
        version = "2024-03"
    return version, failures


def _validation_errors(valid: tuple) -> list[str]:
    errors = [f"{valid[1].get('message')}: {valid[1].get('details')}"] if valid[1] else []
    for node_id, info in (valid[3] or {}).items():
        for reason in info.get("errors", []):
            errors.append(
                f"node {node_id} ({info.get('class_type')}): {reason.get('message')}: {reason.get('details')}"
            )
    return errors


def write_ui(executor) -> None:
    """What each node returned for the frontend (``ui``: shown text, previews) -> ui.json in the graph's out
    folder: 0.3.x keeps it in history_result, 2024 engines in outputs_ui."""
    history = getattr(executor, "history_result", None) or {}
    shown = history.get("outputs") or getattr(executor, "outputs_ui", {})
    os.makedirs(os.environ["UNLEARNKIT_TEST_OUT"], exist_ok=True)
    with open(os.path.join(os.environ["UNLEARNKIT_TEST_OUT"], "ui.json"), "w") as f:
        json.dump({str(k): v for k, v in shown.items()}, f, default=str)


def run_graph(prompt: dict, name: str) -> dict:
    """Validate and execute one API-format prompt (or UI workflow); node errors are reported, never raised."""
    import execution

    import nodes

    started = time.perf_counter()
    if is_ui_workflow(prompt):
        prompt = to_api_prompt(prompt, lambda class_type: nodes.NODE_CLASS_MAPPINGS[class_type].INPUT_TYPES())
        os.makedirs(os.environ["UNLEARNKIT_TEST_OUT"], exist_ok=True)
        with open(os.path.join(os.environ["UNLEARNKIT_TEST_OUT"], "prompt.json"), "w") as f:
            json.dump(prompt, f, indent=1)
    if "prompt_id" in inspect.signature(execution.validate_prompt).parameters:
        valid = _maybe_await(execution.validate_prompt(name, prompt, None))
    else:
        valid = execution.validate_prompt(prompt)
    # ComfyUI runs the outputs that validate and silently drops the others: any node error is a failure
    if not valid[0] or valid[3]:
        return {
            "success": False,
            "errors": _validation_errors(valid),
            "seconds": time.perf_counter() - started,
        }
    server = StandInServer()
    if "cache_args" in inspect.signature(execution.PromptExecutor.__init__).parameters:
        executor = execution.PromptExecutor(server, cache_args={"lru": 0, "ram": 0})
    else:
        executor = execution.PromptExecutor(server)
    executor.execute(prompt, name, {}, valid[2])
    write_ui(executor)
    errors = []
    for event, data in executor.status_messages:
        if event == "execution_error":
            errors.append(f"node {data['node_id']} ({data['node_type']}): {data['exception_type']}: "
                          f"{data['exception_message']}\n" + "".join(data.get("traceback", [])[-3:]))
    success = bool(executor.success) and not errors
    return {"success": success, "errors": errors, "seconds": time.perf_counter() - started}


def unload_everything() -> None:
    """What ComfyUI holds after a graph (loaded models, their patched weights) given back."""
    import gc

    import comfy.model_management as mm

    mm.unload_all_models()
    gc.collect()
    mm.soft_empty_cache()


def run_graphs(request: dict) -> dict:
    """Set the engine up once, then run every graph of the request with a fresh executor."""
    version, failures = setup_engine(
        request["comfy_root"], request["custom_nodes"], request.get("extras", [])
    )
    results = {}
    for name, prompt in request["graphs"].items():
        os.environ["UNLEARNKIT_TEST_OUT"] = os.path.join(request["out_dir"], name)
        try:
            results[name] = run_graph(prompt, name)
        except Exception:  # a harness bug, not a node error: report it against the graph
            results[name] = {"success": False, "errors": [traceback.format_exc()], "seconds": 0.0}
        logger.info("graph %s: %s", name, "ok" if results[name]["success"] else "FAILED")
        if request.get("unload_between_graphs"):
            unload_everything()
    return {"engine": version, "load_failures": failures, "results": results}


def main(argv: list[str]) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    request_path, response_path = argv
    with open(request_path) as f:
        request = json.load(f)
    response = run_graphs(request)
    with open(response_path, "w") as f:
        json.dump(response, f)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
