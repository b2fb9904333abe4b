"""Requests to the real AUTOMATIC1111 and what the core computes for the same ones (test_a1111_real.py):
the panel's control values, txt2img / refused requests over HTTP, images, and the comparison with the core's
re-done sampling (``a1111_reference``) judged by the tiny world's digit judge."""
from __future__ import annotations

import base64
import io as _io
import json
import time

import numpy as np

PROMPT, SEED, STEPS, CFG = "a handwritten digit 7", 1, 20, 6.0
CHECKPOINTS = {"paragon": "paragon", "bold": "style/bold", "slanted": "style/slanted"}  # file stem -> UNet
MIX = (("bold.safetensors", 0.5), ("slanted.safetensors", 0.5))
TIMES: dict[str, float] = {}


def lap(what: str, t0: float) -> None:
    TIMES[what] = round(time.monotonic() - t0, 1)


def panel_args(shards=(), **settings) -> tuple[list, object]:
    """The panel's control values (alwayson_scripts args) and the settings they stand for."""
    from unlearnkit.webui import settings as panel

    chosen = panel.PanelSettings(enabled=True, shards=tuple(shards), **settings)
    return panel.to_controls(chosen), chosen


def generate(server, args=None, path="/sdapi/v1/txt2img", **body) -> dict:
    request = {"prompt": PROMPT, "negative_prompt": "", "steps": STEPS, "width": 64, "height": 64,
               "seed": SEED, "cfg_scale": CFG, "sampler_name": "Euler", "scheduler": "Automatic", **body}
    if args is not None:
        request["alwayson_scripts"] = {"unlearnkit": {"args": args}}
    t0 = time.monotonic()
    code, out = server.post(path, request)
    lap(f"{path.rsplit('/', 1)[-1]} {len(TIMES)}", t0)
    assert code == 200, out
    return out


def refused(server, args, **body) -> str:
    """The API's error text for a request the panel must refuse (HTTP 500, nothing sampled)."""
    request = {"prompt": PROMPT, "steps": 4, "width": 64, "height": 64,
               "alwayson_scripts": {"unlearnkit": {"args": args}}, **body}
    code, out = server.post("/sdapi/v1/txt2img", request)
    assert code == 500, out
    return out["errors"]


def pixels(b64: str) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.open(_io.BytesIO(base64.b64decode(b64))).convert("RGB"))


def infotext(out: dict) -> str:
    return json.loads(out["info"])["infotexts"][0]


# ---- the core's side -----------------------------------------------------------------------------

def core_models() -> dict:
    """The tiny world's models in fp32, as the references and the judge use them."""
    from unlearnkit.tinyworld import store

    unets = {f"{stem}.safetensors": store.load_unet(unet).float() for stem, unet in CHECKPOINTS.items()}
    return {"te": store.load_text_encoder().float(), "vae": store.load_vae().float(), "unets": unets,
            "judge": store.load_judge("digit")}


def reference(core, shards=("paragon.safetensors",), gate=None, te=None, evaluation=None) -> np.ndarray:
    import a1111_reference

    return a1111_reference.txt2img([core["unets"][s] for s in shards], list(shards), gate, te or core["te"],
                                   core["vae"], PROMPT, SEED, STEPS, CFG, evaluation=evaluation)


def judged(core, image: np.ndarray) -> int:
    import torch

    from unlearnkit.tinyworld.judges import predict

    x = torch.from_numpy(image.copy()).permute(2, 0, 1)[None].float() / 127.5 - 1
    return int(predict(core["judge"], x)[0])


def assert_close(webui_image: np.ndarray, core_image: np.ndarray, what: str, max_diff: int = 3) -> None:
    """Equal up to float rounding (a few of 255 levels), on 16x16 images (64x64 asked, VAE factor 2)."""
    diff = np.abs(webui_image.astype(int) - core_image.astype(int))
    assert webui_image.shape == core_image.shape == (16, 16, 3), what
    assert diff.max() <= max_diff and diff.mean() <= 0.25, f"{what}: webui vs core max {diff.max()}, " \
                                                           f"mean {diff.mean():.3f}"


def differs(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(int) - b.astype(int)).mean())


# ---- the checks ----------------------------------------------------------------------------------
