"""The panel built with REAL gradio 4.40.0 (the version Forge pins; A1111's gradio 3.41 is exercised by the
real-webui tests): its controls' default values read back as the default settings, and every control maps to
a settings field. gradio 4 does not install beside this suite's packages (it wants huggingface_hub < 1 and
pillow < 11), so it runs in a cached venv that sees the suite's packages and overrides only those."""
import json
import os
import subprocess
from pathlib import Path

from venvs import cached_venv

REPO = Path(__file__).resolve().parents[2]
GRADIO = ["gradio==4.40.0", "huggingface_hub<1"]
PROBE = r"""
import importlib.util, json, sys
import gradio as gr
from unlearnkit.webui import settings as panel

spec = importlib.util.spec_from_file_location("unlearnkit_script.py", sys.argv[1])
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
found = {"checkpoints": ["a.safetensors", "b.safetensors"], "gates": ["g.safetensors"],
         "text_encoders": ["vangogh_unlearned"], "slug_patches": ["p.safetensors"]}
with gr.Blocks():
    controls, fields = module.build_ui(gr, found, lambda: found)
defaults = panel.from_controls([c.value for c in controls]) == panel.PanelSettings()
print(json.dumps({"gradio": gr.__version__, "kinds": [type(c).__name__ for c in controls],
                  "pasters": sum(callable(f) for _, f in fields),
                  "send_to": sum(isinstance(f, str) for _, f in fields),
                  "defaults_round_trip": defaults}))
"""


def test_panel_builds_with_real_gradio_4():
    python = cached_venv("gradio-4", GRADIO, system_site=True)
    script = REPO / "extensions" / "sd-webui-unlearnkit" / "scripts" / "unlearnkit_script.py"
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([str(python), "-c", PROBE, str(script)], capture_output=True, text=True, env=env,
                          timeout=300, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["gradio"] == "4.40.0", out
    assert out["kinds"][:3] == ["Checkbox", "Dropdown", "Slider"]
    assert out["kinds"][-3:] == ["Dropdown", "Dropdown", "Slider"]  # SLUG patches, evaluate, fast σ
    assert out["pasters"] == out["send_to"] == len(out["kinds"]) and out["defaults_round_trip"], out
