"""The pack root imports without ComfyUI (as registry scanners and tools do) and exposes its nodes."""
from __future__ import annotations

import json
import subprocess
import sys

from comfy_harness import PACK_DIR_NAME, REPO_ROOT

PROBE = r"""
import importlib.util, json, sys
root, name = sys.argv[1], sys.argv[2]
spec = importlib.util.spec_from_file_location(name, root + "/__init__.py", submodule_search_locations=[root])
pack = importlib.util.module_from_spec(spec)
sys.modules[name] = pack
spec.loader.exec_module(pack)
host = sorted(m for m in sys.modules if m.split(".")[0] in ("comfy", "folder_paths", "nodes", "comfy_api"))
inputs = {k: cls.INPUT_TYPES() for k, cls in pack.NODE_CLASS_MAPPINGS.items()}
print(json.dumps({"classes": sorted(pack.NODE_CLASS_MAPPINGS), "names": pack.NODE_DISPLAY_NAME_MAPPINGS,
                  "host_modules": host, "inputs": inputs,
                  "returns": {k: list(cls.RETURN_TYPES) for k, cls in pack.NODE_CLASS_MAPPINGS.items()},
                  "categories": {k: cls.CATEGORY for k, cls in pack.NODE_CLASS_MAPPINGS.items()}}))
"""


def import_pack(tmp_path) -> dict:
    proc = subprocess.run([sys.executable, "-c", PROBE, str(REPO_ROOT), PACK_DIR_NAME], cwd=tmp_path,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "nodes not loaded" not in proc.stderr, proc.stderr  # the root's ImportError guard fired
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_root_imports_without_comfyui_and_exposes_compose_nodes(tmp_path):
    info = import_pack(tmp_path)
    assert info["host_modules"] == []
    assert {"UnlearnKitShard", "UnlearnKitComposeShards"} <= set(info["classes"])
    assert info["names"]["UnlearnKitShard"] == "Shard (UnlearnKit)"
    assert info["names"]["UnlearnKitComposeShards"] == "Compose Shards (UnlearnKit)"
    assert set(info["names"]) == set(info["classes"])
    assert info["categories"]["UnlearnKitShard"] == "UnlearnKit/Compose"
    shard = info["inputs"]["UnlearnKitShard"]
    kind, spec = shard["required"]["weight"]
    assert (kind, spec["min"], spec["max"], spec["step"], spec["display"]) == (
        "FLOAT",
        0.0,
        1.0,
        0.01,
        "slider",
    )
    assert shard["required"]["model"][0] == "MODEL" and shard["optional"]["shards"][0] == "SHARDS"
    assert info["returns"] == {
        **info["returns"],
        "UnlearnKitShard": ["SHARDS"],
        "UnlearnKitComposeShards": ["MODEL"],
    }
