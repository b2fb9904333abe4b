"""LABELLED STAND-IN of Stability-AI/generative-models' ``sgm`` package (the SDXL code AUTOMATIC1111 imports)
— not sgm. Used only when the real repositories are absent (see ``a1111_host.repositories``).

Why it exists: AUTOMATIC1111 v1.10.1 imports ``sgm`` at start-up (modules/paths.py, initialize.py,
sd_hijack.py, sd_hijack_optimizations.py, sd_hijack_unet.py, sd_models_xl.py, devices.py) and patches a few
of its classes, but sgm is not on the package registry (the one place CI may fetch from) and the team's
webui snapshot does not hold the repositories/ folder the webui clones at install time. This package
defines exactly the module paths and names the webui touches (``test_a1111_host.py`` checks every ``sgm.``
name in the webui's modules/ resolves here) and nothing else: an SD1 checkpoint — what the tests load —
never calls into it; an SDXL checkpoint cannot load with it (``DiffusionEngine`` raises, naming why).
"""
from __future__ import annotations

from pathlib import Path

WHY = ("stand-in for Stability-AI/generative-models (sgm), which is not on the package registry and not "
       "in the webui snapshot: SDXL cannot load here")

_CLASS = '''

class {name}({base}):
    """Stand-in of sgm's {name}: the webui patches its methods; SD1 models never instantiate it."""

    def __init__(self, *args, **kwargs):
        raise NotImplementedError(WHY)

    def forward(self, *args, **kwargs):
        raise NotImplementedError(WHY)
'''


def _module(doc: str, classes: tuple[str, ...] = (), base: str = "torch.nn.Module", extra: str = "") -> str:
    head = f'"""{doc} ({WHY})."""\nimport torch\n\nWHY = {WHY!r}\n' + extra
    return head + "".join(_CLASS.format(name=name, base=base) for name in classes)


FILES = {
    "sgm/__init__.py": '"""Stand-in of sgm (see sgm/models/diffusion.py)."""\n'
                       "from .models import AutoencodingEngine, DiffusionEngine  # noqa: F401\n",
    "sgm/models/__init__.py": "from .autoencoder import AutoencodingEngine  # noqa: F401\n"
                              "from .diffusion import DiffusionEngine  # noqa: F401\n",
    "sgm/models/diffusion.py": _module("sgm.models.diffusion", ("DiffusionEngine",)),
    "sgm/models/autoencoder.py": _module("sgm.models.autoencoder", ("AutoencodingEngine",)),
    # the real package's imports load these submodules with sgm (sd_models_xl.py relies on it)
    "sgm/modules/__init__.py": "from . import attention, diffusionmodules  # noqa: F401\n"
                               "from .encoders.modules import GeneralConditioner  # noqa: F401\n",
    "sgm/modules/attention.py": _module("sgm.modules.attention", ("CrossAttention",),
                                        extra="SDP_IS_AVAILABLE = True\nXFORMERS_IS_AVAILABLE = False\n"),
    "sgm/modules/encoders/__init__.py": "",
    "sgm/modules/encoders/modules.py": _module("sgm.modules.encoders.modules", ("GeneralConditioner",)),
    "sgm/modules/diffusionmodules/__init__.py": "from . import (  # noqa: F401\n"
    "    denoiser_scaling, discretizer, model, openaimodel, util, wrappers)\n",
    "sgm/modules/diffusionmodules/model.py": _module(
        "sgm.modules.diffusionmodules.model", ("AttnBlock",),
        extra="\n\ndef nonlinearity(x):\n    return x * torch.sigmoid(x)\n"),
    "sgm/modules/diffusionmodules/openaimodel.py": _module(
        "sgm.modules.diffusionmodules.openaimodel", ("UNetModel",),
        extra="th = torch\n\n\ndef timestep_embedding(*args, **kwargs):\n"
              "    raise NotImplementedError(WHY)\n"),
    "sgm/modules/diffusionmodules/util.py": _module(
        "sgm.modules.diffusionmodules.util",
        extra="\n\nclass GroupNorm32(torch.nn.GroupNorm):\n    pass\n"),
    "sgm/modules/diffusionmodules/wrappers.py": _module("sgm.modules.diffusionmodules.wrappers",
                                                        ("OpenAIWrapper",)),
    "sgm/modules/diffusionmodules/denoiser_scaling.py": _module(
        "sgm.modules.diffusionmodules.denoiser_scaling", ("EpsScaling", "VScaling"), base="object"),
    "sgm/modules/diffusionmodules/discretizer.py": _module(
        "sgm.modules.diffusionmodules.discretizer", ("LegacyDDPMDiscretization",), base="object"),
}


def write_sgm_standin(generative_models: Path) -> Path:
    """Write the stand-in package under ``generative_models`` (the webui's repositories/generative-models)."""
    for rel, source in FILES.items():
        path = generative_models / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(source)
    (generative_models / "STAND-IN.txt").write_text(__doc__)
    return generative_models
