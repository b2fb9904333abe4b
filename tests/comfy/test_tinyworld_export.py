"""The tiny world's LDM export (unlearnkit/tinyworld/export.py) runs identically in both real ComfyUI
engines."""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from comfy_harness import ENGINES, comfy_root

CHILD = textwrap.dedent(
    """
    import sys, torch
    sys.path.insert(0, sys.argv[1])
    import comfy.cli_args; comfy.cli_args.args.cpu = True
    import comfy.ops
    from comfy.ldm.modules.diffusionmodules.openaimodel import UNetModel
    from comfy.ldm.models.autoencoder import AutoencoderKL
    from unlearnkit.tinyworld import store
    from unlearnkit.tinyworld.export import ldm_unet_config, ldm_vae_config, unet_to_ldm, vae_to_ldm
    torch.manual_seed(0)
    unet, vae = store.load_unet("paragon"), store.load_vae()
    m = UNetModel(**ldm_unet_config(dict(unet.config)), dtype=torch.float32,
    operations=comfy.ops.disable_weight_init)
    p = "model.diffusion_model."
    m.load_state_dict({k[len(p):]: v for k, v in unet_to_ldm(unet.state_dict(), dict(unet.config)).items()})
    x, t, c = torch.randn(2, 4, 8, 8), torch.tensor([999, 20]), torch.randn(2, 77, 64)
    with torch.no_grad():
        d = (m(x, t, context=c) - unet(x, t, encoder_hidden_states=c).sample).abs().max().item()
    v = AutoencoderKL(**ldm_vae_config(dict(vae.config)))
    p = "first_stage_model."
    v.load_state_dict({k[len(p):]: w for k, w in vae_to_ldm(vae.state_dict(), dict(vae.config)).items()})
    with torch.no_grad():
        e = (v.decode(x) - vae.decode(x).sample).abs().max().item()
    print("DIFF", d, e)
    """
)


@pytest.mark.parametrize("engine", list(ENGINES))
def test_ldm_state_dicts_run_identically_in_comfyui(committed, engine, tmp_path):
    root = comfy_root(engine)
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(Path(__file__).resolve().parents[2]))
    out = subprocess.run(
        [sys.executable, str(script), str(root)], capture_output=True, text=True, env=env, timeout=300
    )
    line = [ln for ln in out.stdout.splitlines() if ln.startswith("DIFF")]
    assert line, out.stderr[-3000:]
    unet_diff, vae_diff = map(float, line[0].split()[1:])
    assert unet_diff < 1e-4 and vae_diff < 1e-4
