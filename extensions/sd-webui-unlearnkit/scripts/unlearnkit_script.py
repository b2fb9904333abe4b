"""UnlearnKit for AUTOMATIC1111 / Forge: an always-visible panel that mixes shard checkpoints per step
(CDM), swaps in a concept-erased text encoder (AdvUnlearn) and applies SLUG patches.

Glue only: every decision lives in the host-free ``unlearnkit.webui`` package (settings and controls,
model files, the generation plan, UNet hooks, conditioning edits), tested without a webui. The Script
methods are the one place that imports the webui's ``modules``; the few functions here read host objects
(``shared``, ``sd_models``, ``gradio``, Forge's ``backend``) and hand plain values to the core.
Forge: the shard mixture is a ``model_function_wrapper`` set on a clone of ``forge_objects.unet`` in
``process_before_every_sampling``. A1111: the UNet's forward is replaced for the duration of ``p.sample``
and restored in a ``finally``. Text-encoder edits are applied around the conditioning computation only, and
the webui's cached conds are cleared whenever the encoder they came from changes.
"""
from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

logger = logging.getLogger("unlearnkit.webui")
EXT_DIR = Path(__file__).resolve().parents[1]  # resolved: a linked extension points into the repository


def core_candidates(ext_dir: Path) -> list[Path]:
    """Folders that may hold the ``unlearnkit`` package: a copy vendored by ``install-webui --copy``, the
    checkout."""
    return [ext_dir, ext_dir.parents[1]]


def ensure_core(ext_dir: Path = EXT_DIR) -> None:
    """Make ``import unlearnkit`` work: installed, vendored next to the extension, or the linked
    repository."""
    try:  # a core with every webui helper this script uses (an older install lacks some)
        import unlearnkit.webui.conditioning  # noqa: F401
        import unlearnkit.webui.controls  # noqa: F401
        import unlearnkit.webui.generation  # noqa: F401
        import unlearnkit.webui.unet_hooks  # noqa: F401
        return
    except ImportError:
        for name in [m for m in sys.modules if m == "unlearnkit" or m.startswith("unlearnkit.")]:
            del sys.modules[name]  # an older or partial install: use the one shipped with the extension
    for folder in core_candidates(ext_dir):
        if (folder / "unlearnkit" / "webui" / "__init__.py").is_file():
            sys.path.append(str(folder))  # appended: never shadows the webui's own modules
            return
    raise ImportError(
        f"UnlearnKit core not found next to {ext_dir}; install with `python -m unlearnkit install-webui "
        "WEBUI_DIR`"
    )


ensure_core()

from unlearnkit.webui import controls as specs  # noqa: E402
from unlearnkit.webui import model_files as lib  # noqa: E402
from unlearnkit.webui import settings as panel  # noqa: E402
from unlearnkit.webui.conditioning import CondCacheGuard, edit_conds, plan_edits, used_files  # noqa: E402
from unlearnkit.webui.generation import Generation, attribution_output, plan_mixture, refuse  # noqa: E402
from unlearnkit.webui.unet_hooks import a1111_mixture, forge_mixture, install_forward  # noqa: E402

try:  # inside the webui; outside it (tests, linters) the class still defines
    import modules.scripts as scripts
except ImportError:
    from types import SimpleNamespace

    scripts = SimpleNamespace(Script=object, AlwaysVisible=True)
# Never bind a Script class to a name here (`from modules.scripts import Script`): the webui registers every
# Script subclass in this module's namespace, the base class included, whose title() raises.

SHARDS = lib.FileCache()  # shard models, kept while the panel uses them
FILES = lib.FileCache()  # gate nets, text encoders, SLUG patches
CONDS = CondCacheGuard()  # which encoder edits the webui's cached conds were computed with


# ---- host objects -> plain values ----------------------------------------------------------------
def checkpoints(sd_models: Any) -> dict[str, str]:
    """{name: filename} of the webui's checkpoint list."""
    return {info.name: info.filename for info in sd_models.checkpoints_list.values()}


def shard_hashes(sd_models: Any, settings: panel.PanelSettings) -> dict[str, str]:
    """The webui's short hash (sha256[:10], cached by the webui) of each chosen shard: the record of what
    mixed."""
    out = {}
    for info in sd_models.checkpoints_list.values():
        if settings.enabled and info.name in settings.shard_names:
            calculate = getattr(info, "calculate_shorthash", None)
            out[info.name] = calculate() if calculate else lib.short_hash(info.filename)
    return out


def warm_text_encoder(sd_model: Any) -> None:
    """Let the host merge its LoRAs into the text encoder *before* we edit it, so its own backups hold the
    unedited weights (Forge merges when it loads the CLIP patcher; A1111 lazily at the first forward)."""
    import torch

    try:
        forge = getattr(sd_model, "forge_objects", None)
        if forge is not None:
            from backend import memory_management

            memory_management.load_model_gpu(forge.clip.patcher)
        else:
            with torch.no_grad():
                sd_model.get_learned_conditioning([""])
    except Exception as exc:  # e.g. an SDXL model wants its own conditioning batch: edits still apply
        logger.warning("UnlearnKit: could not warm up the text encoder before editing it (%s)", exc)


def forge_load_unet(path: Path) -> Any:
    """Forge's own loader for a checkpoint file; only its UNet patcher is kept."""
    from backend.loader import forge_loader

    return forge_loader(str(path)).forge_objects.unet


# ---- panel ---------------------------------------------------------------------------------------
def make_control(gr: Any, spec: specs.ControlSpec, found: dict[str, list[str]]) -> Any:
    """One gradio component of a control spec."""
    if spec.kind == "checkbox":
        return gr.Checkbox(value=spec.value, label=spec.label)
    if spec.kind == "slider":
        return gr.Slider(minimum=spec.minimum, maximum=spec.maximum, step=spec.step, value=spec.value,
                         label=spec.label)
    return gr.Dropdown(choices=specs.choices_of(spec, found), value=spec.value, label=spec.label,
                       multiselect=spec.kind == "multiselect")


def build_ui(gr: Any, found: dict[str, list[str]],
             refresh_choices: Callable[[], dict[str, list[str]]]) -> tuple[list, list]:
    """The panel's controls (in ``panel.control_names`` order) and its infotext_fields: for each control, its
    value from a pasted infotext, and its "Send to" name (``controls.paste_names``)."""
    made: dict[str, Any] = {}
    with gr.Accordion("UnlearnKit: shards, erased text encoder, SLUG patches", open=False):
        for row in specs.panel_rows():
            with gr.Row():
                made.update((spec.name, make_control(gr, spec, found)) for spec in row)
        refresh = gr.Button(value="Refresh lists")
    listed = [spec for spec in specs.panel_specs() if spec.files]

    def on_refresh() -> list:
        new = refresh_choices()
        return [gr.update(choices=specs.choices_of(spec, new)) for spec in listed]

    refresh.click(fn=on_refresh, inputs=[], outputs=[made[spec.name] for spec in listed])
    names = panel.control_names()
    controls = [made[name] for name in names]
    fields = [(made[name], paster(name)) for name in names]
    return controls, fields + [(made[name], specs.paste_name(name)) for name in names]


def paster(control: str) -> Callable[[dict], Any]:
    """infotext_fields entry: the value ``control`` takes from pasted parameters (None: unchanged)."""
    return lambda params: panel.paste_value(params, control)


class UnlearnKitScript(scripts.Script):
    """The always-visible panel in txt2img and img2img."""

    sorting_priority = 20

    def title(self) -> str:
        return "UnlearnKit"

    def show(self, is_img2img: bool) -> Any:
        return scripts.AlwaysVisible

    def ui(self, is_img2img: bool) -> list:
        import gradio as gr
        from modules import sd_models, shared

        def found() -> dict[str, list[str]]:
            return lib.panel_choices(shared.models_path, checkpoints(sd_models))

        def refresh() -> dict[str, list[str]]:
            sd_models.list_models()
            return found()

        controls, self.infotext_fields = build_ui(gr, found(), refresh)
        self.paste_field_names = specs.paste_names()  # "Send to img2img / txt2img" copies these
        return controls

    def process(self, p: Any, *args: Any) -> None:
        from modules import processing, sd_models, shared

        settings = panel.from_controls(args)
        p.unlearnkit = gen = Generation(settings)
        try:
            settings.check()
            FILES.keep(used_files(settings, shared.models_path) if settings.enabled else [])
            hashes = shard_hashes(sd_models, settings)
            p.extra_generation_params.update(panel.infotext_params(settings, hashes))
            if settings.edits_text_encoder:
                edits = plan_edits(settings, shared.models_path, FILES)
                edit_conds(p, edits, CONDS, processing.StableDiffusionProcessing, lambda: shared.sd_model,
                           warm_text_encoder, f"text encoder {settings.text_encoder or '(loaded)'}")
            else:
                CONDS.use(p, processing.StableDiffusionProcessing, ())
            if settings.composing:
                plan_mixture(gen, checkpoints(sd_models), shared.models_path, SHARDS, FILES)
                if not hasattr(shared.sd_model, "forge_objects"):
                    original = p.sample
                    p.sample = lambda *a, **k: self._sample_a1111(gen, shared.sd_model, original, *a, **k)
        except Exception as exc:  # the webui would log it and sample anyway: refuse instead
            logger.exception("UnlearnKit: cannot apply the panel's settings")
            p.sample = refuse(exc)

    @staticmethod
    def _sample_a1111(gen: Generation, sd_model: Any, original: Callable, *a: Any, **k: Any) -> Any:
        unet, mixer = a1111_mixture(gen, sd_model, SHARDS)
        restore = install_forward(unet, mixer)
        try:
            return original(*a, **k)
        finally:
            restore()

    def process_before_every_sampling(self, p: Any, *args: Any, **kwargs: Any) -> None:
        gen = getattr(p, "unlearnkit", None)
        if gen is None or not gen.settings.composing or gen.runs is None:
            return
        forge = getattr(p.sd_model, "forge_objects", None)
        if forge is None:  # A1111 calls this hook too; there the mixture wraps p.sample (see process)
            return
        try:
            forge.unet = forge_mixture(gen, forge.unet, p.sd_model, forge_load_unet, SHARDS)
        except Exception as exc:
            logger.exception("UnlearnKit: cannot build the shard mixture")
            fail = refuse(exc)
            clone = forge.unet.clone()
            clone.set_model_unet_function_wrapper(lambda apply_model, args: fail())
            forge.unet = clone

    def postprocess(self, p: Any, processed: Any, *args: Any) -> None:
        attribution_output(getattr(p, "unlearnkit", None), processed)
