"""UnlearnKit for AUTOMATIC1111 / Forge: an always-visible panel that mixes shard checkpoints per step
(CDM), swaps in a concept-erased text encoder (AdvUnlearn) and applies SLUG patches.

Glue only (the maths and every decision live in the ``unlearnkit`` core, ``unlearnkit.webui``):
the Script methods are the one place that imports the webui's ``modules``; the functions below take
the host objects they need (``shared``, ``sd_models``, ``processing``, ``gradio``, ``p``) as arguments.
Forge: the shard mixture is a ``model_function_wrapper`` set on a clone of ``forge_objects.unet`` in
``process_before_every_sampling``. A1111: the UNet's forward is replaced for the duration of
``p.sample`` and restored in a ``finally``. Text-encoder edits are applied around the conditioning
computation only, and the webui's cached conds are cleared whenever the encoder they came from changes.
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
    try:
        import unlearnkit.webui.settings  # noqa: F401 - a core with the webui helpers
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

from unlearnkit.compose.attribution import attribution_plot  # noqa: E402
from unlearnkit.compose.gate_model import load_gate  # noqa: E402
from unlearnkit.compose.mixture import check_same_family  # noqa: E402
from unlearnkit.textencoders.loading import load_text_encoder_state  # noqa: E402
from unlearnkit.unlearn.patches import load_patch  # noqa: E402
from unlearnkit.webui import model_files as lib  # noqa: E402
from unlearnkit.webui import settings as panel  # noqa: E402
from unlearnkit.webui.encoder_edits import EncoderEdits  # noqa: E402
from unlearnkit.webui.mixing import ComposerRuns, VEMixture, VPMixture, build_gate  # noqa: E402

try:  # inside the webui; outside it (tests, linters) the class still defines
    from modules.scripts import AlwaysVisible, Script
except ImportError:
    Script, AlwaysVisible = object, True

SHARDS = lib.FileCache()  # shard models, kept while the panel uses them
FILES = lib.FileCache()  # gate nets, text encoders, SLUG patches
COND_EDITS = ["unset"]  # signature of the encoder edits the webui's cached conds were computed with


# ---- files ---------------------------------------------------------------------------------------
def choices(shared: Any, sd_models: Any) -> dict[str, list[str]]:
    """Dropdown entries: checkpoints the webui lists, and the extension's folders under its models folder."""
    root = Path(shared.models_path)
    return {
        "checkpoints": sorted(info.name for info in sd_models.checkpoints_list.values()),
        "gates": lib.list_entries(root / lib.SUBFOLDERS["gates"], lib.GATE_SUFFIXES),
        "text_encoders": lib.list_entries(
            root / lib.SUBFOLDERS["text_encoders"], lib.TEXT_ENCODER_SUFFIXES, lib.HF_FOLDER_MARKER
        ),
        "slug_patches": lib.list_entries(root / lib.SUBFOLDERS["slug_patches"], lib.PATCH_SUFFIXES),
    }


def shard_hashes(sd_models: Any, settings: panel.PanelSettings) -> dict[str, str]:
    """The webui's short hash (sha256[:10], cached by the webui) of each chosen shard: the record of what
    mixed."""
    out = {}
    for info in sd_models.checkpoints_list.values():
        if settings.enabled and info.name in settings.shard_names:
            calculate = getattr(info, "calculate_shorthash", None)
            out[info.name] = calculate() if calculate else lib.short_hash(info.filename)
    return out


def checkpoint_path(sd_models: Any, name: str) -> Path:
    for info in sd_models.checkpoints_list.values():
        if info.name == name:
            return Path(info.filename)
    raise ValueError(f"shard: checkpoint {name!r} is not in the webui's models list (refresh the list)")


def entry(shared: Any, kind: str, name: str) -> Path:
    return lib.resolve_entry(
        Path(shared.models_path) / lib.SUBFOLDERS[kind], name, kind.replace("_", " ")[:-1]
    )


# ---- per generation ------------------------------------------------------------------------------
class Generation:
    """What one generation asked for and what it recorded (one ComposerRuns over every sampling pass).

    A plain class: the webui loads script files without registering them in sys.modules, which
    dataclasses with postponed annotations need.
    """

    def __init__(self, settings: panel.PanelSettings) -> None:
        self.settings = settings
        self.names: list[str] = []  # active shards (weight > 0)
        self.paths: list[Path] = []
        self.runs: ComposerRuns | None = None


def plan_mixture(gen: Generation, shared: Any, sd_models: Any) -> None:
    """Resolve the active shards and build the run tracker with its gate (errors name the control)."""
    s = gen.settings
    active = [(n, w) for n, w in s.shards if w > 0]
    gen.names = [n for n, _ in active]
    gen.paths = [checkpoint_path(sd_models, n) for n in gen.names]
    SHARDS.keep(gen.paths)
    net = FILES.get(entry(shared, "gates", s.gate_file), load_gate) if s.gate == "classifier" else None
    weights = [w for _, w in active]
    gen.runs = ComposerRuns(gen.names, lambda: build_gate(s.gate, gen.names, weights, net), s.prune_eps)


def is_loaded(path: Path, sd_model: Any) -> bool:
    info = getattr(sd_model, "sd_checkpoint_info", None)
    return info is not None and Path(info.filename).resolve() == path.resolve()


def install_forward(module: Any, forward: Callable) -> Callable[[], None]:
    """Replace ``module.forward`` by ``forward``; returns the function that puts the previous one back."""
    had, old = "forward" in module.__dict__, module.__dict__.get("forward")
    module.forward = forward

    def restore() -> None:
        if module.__dict__.get("forward") is not forward:
            logger.warning(
                "UnlearnKit: another extension replaced the UNet forward during sampling; restoring ours' "
                "predecessor"
            )
        if had:
            module.forward = old
        else:
            module.__dict__.pop("forward", None)

    return restore


def a1111_mixture(gen: Generation, sd_model: Any) -> tuple[Any, VPMixture]:
    """(UNet module, its mixed forward): shards are copies of the loaded UNet holding each checkpoint's
    weights."""
    unet = sd_model.model.diffusion_model
    own = unet.__dict__.get("forward") or type(unet).forward.__get__(unet)
    forwards = [
        own if is_loaded(path, sd_model) else SHARDS.get(path, lambda q: lib.load_unet_like(unet, q), "a1111")
        for path in gen.paths
    ]
    prediction = "v_prediction" if getattr(sd_model, "parameterization", "eps") == "v" else "epsilon"
    channels = int(getattr(unet, "out_channels", 4))
    return unet, VPMixture(gen.runs, forwards, sd_model.alphas_cumprod, prediction, channels)


def forge_signature(patcher: Any) -> dict:
    """What must agree between Forge shards: UNet class and config, prediction type."""
    model = patcher.model
    config = dict(getattr(model.diffusion_model, "config", {}) or {})
    return {
        "unet": type(model.diffusion_model).__name__,
        "prediction": getattr(model.predictor, "prediction_type", None),
        **{k: repr(v) for k, v in sorted(config.items()) if k not in ("dtype", "device")},
    }


def forge_mixture(gen: Generation, unet: Any, sd_model: Any, load_unet: Callable[[Path], Any]) -> Any:
    """A clone of Forge's UNet patcher whose model_function_wrapper mixes the shards; shards load with it."""
    patchers = [
        None if is_loaded(path, sd_model) else SHARDS.get(path, load_unet, "forge") for path in gen.paths
    ]
    check_same_family([(n, forge_signature(p or unet)) for n, p in zip(gen.names, patchers)])
    clone = unet.clone()
    inner = unet.model_options.get("model_function_wrapper")
    models = [None if p is None else p.model.apply_model for p in patchers]
    clone.set_model_unet_function_wrapper(VEMixture(gen.runs, models, inner=inner))
    for p in patchers:
        if p is not None:
            clone.add_extra_model_patcher_during_sampling(p)
    return clone


def forge_load_unet(path: Path) -> Any:
    """Forge's own loader for a checkpoint file; only its UNet patcher is kept."""
    from backend.loader import forge_loader

    return forge_loader(str(path)).forge_objects.unet


# ---- text encoder --------------------------------------------------------------------------------
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


def encoder_module(sd_model: Any) -> Any:
    """The module tree holding the text encoder(s): Forge's CLIP patcher model, A1111's cond stage."""
    forge = getattr(sd_model, "forge_objects", None)
    if forge is not None:
        return forge.clip.cond_stage_model
    return getattr(sd_model, "cond_stage_model", None) or sd_model.conditioner


def plan_edits(settings: panel.PanelSettings, shared: Any) -> tuple[Any, list, tuple]:
    """(swap state dict or None, patches, signature) of the panel's encoder edits."""
    swap, patches, signature = None, [], ()
    if settings.text_encoder:
        path = entry(shared, "text_encoders", settings.text_encoder)
        swap = (
            FILES.get(path, lambda q: load_text_encoder_state(q)[0], "te")
            if path.is_file()
            else load_text_encoder_state(path)[0]
        )
        signature += (settings.text_encoder, lib.file_key(path) if path.is_file() else str(path))
    for name in settings.slug_patches:
        patch = FILES.get(entry(shared, "slug_patches", name), load_patch, "slug")
        patches.append(patch)
        signature += (patch.id,)
    return swap, patches, signature


def used_files(settings: panel.PanelSettings, shared: Any) -> list[Path]:
    """The gate, encoder and patch files the settings use (what FILES keeps)."""
    wanted = [
        ("gates", settings.gate_file if settings.gate == "classifier" else ""),
        ("text_encoders", settings.text_encoder),
    ]
    wanted += [("slug_patches", name) for name in settings.slug_patches]
    return [entry(shared, kind, name) for kind, name in wanted if name]


def clear_cond_caches(p: Any, processing: Any) -> None:
    """Empty the webui's cached conds in place (instance and class-level lists share objects)."""
    holders = [p, type(p), getattr(processing, "StableDiffusionProcessing", None)]
    for holder in holders:
        for attr in ("cached_c", "cached_uc", "cached_hr_c", "cached_hr_uc"):
            cache = getattr(holder, attr, None) if holder is not None else None
            if isinstance(cache, list):
                cache[:] = [None] * len(cache)


def use_cond_caches(p: Any, processing: Any, signature: tuple) -> None:
    """Clear the cached conds when they were computed with other encoder edits than ``signature``."""
    if COND_EDITS[0] != signature:
        if COND_EDITS[0] != "unset" or signature:
            clear_cond_caches(p, processing)
            logger.info("UnlearnKit: text encoder changed; cleared the webui's cached conditionings")
        COND_EDITS[0] = signature


def wrap_method(obj: Any, name: str, around: Callable) -> None:
    """obj.name(*a, **k) becomes around(original, *a, **k) for this object only."""
    original = getattr(obj, name)
    setattr(obj, name, lambda *a, **k: around(original, *a, **k))


def edit_conds(p: Any, shared: Any, processing: Any, settings: panel.PanelSettings) -> tuple:
    """Apply the encoder edits around every conditioning computation of ``p``; returns their signature."""
    swap, patches, signature = plan_edits(settings, shared)
    depth = [0]  # txt2img's setup_conds calls calculate_hr_conds: edit once, at the outer call

    def around(original: Callable, *a: Any, **k: Any) -> Any:
        if depth[0]:
            return original(*a, **k)
        use_cond_caches(p, processing, signature)
        warm_text_encoder(shared.sd_model)
        depth[0] += 1
        try:
            with EncoderEdits(encoder_module(shared.sd_model), swap, patches,
                              what=f"text encoder {settings.text_encoder or '(loaded)'}"):
                return original(*a, **k)
        finally:
            depth[0] -= 1

    for method in ("setup_conds", "calculate_hr_conds"):
        if callable(getattr(p, method, None)):
            wrap_method(p, method, around)
    return signature


# ---- panel ---------------------------------------------------------------------------------------
def build_ui(
    gr: Any, found: dict[str, list[str]], refresh_choices: Callable[[], dict[str, list[str]]]
) -> tuple[list, list]:
    """The panel's controls (in ``panel.control_names`` order) and its infotext_fields."""
    none = [panel.NONE]
    with gr.Accordion("UnlearnKit: shards, erased text encoder, SLUG patches", open=False):
        enabled = gr.Checkbox(value=False, label="Enable UnlearnKit")
        slots = []
        for i in range(1, panel.MAX_SHARDS + 1):
            with gr.Row():
                slots.append(
                    gr.Dropdown(choices=none + found["checkpoints"], value=panel.NONE, label=f"Shard {i}")
                )
                slots.append(gr.Slider(minimum=0.0, maximum=1.0, step=0.01, value=1.0, label=f"Weight {i}"))
        with gr.Row():
            gate = gr.Dropdown(choices=list(panel.GATES), value="static", label="Gate")
            gate_file = gr.Dropdown(
                choices=none + found["gates"], value=panel.NONE, label="Gate file (classifier)"
            )
            prune = gr.Slider(
                minimum=0.0,
                maximum=panel.MAX_PRUNE_EPS,
                step=0.005,
                value=0.0,
                label="Prune ε (skip shards below)",
            )
            plot = gr.Checkbox(value=True, label="Attribution plot in outputs")
        with gr.Row():
            encoder = gr.Dropdown(
                choices=none + found["text_encoders"], value=panel.NONE, label="Text encoder (AdvUnlearn)"
            )
            patches = gr.Dropdown(
                choices=found["slug_patches"], value=[], multiselect=True, label="SLUG patches"
            )
            refresh = gr.Button(value="Refresh lists")
    controls = [enabled, *slots, gate, gate_file, prune, plot, encoder, patches]
    lists = [("checkpoints", c) for c in slots[::2]] + [("gates", gate_file), ("text_encoders", encoder)]

    def on_refresh() -> list:
        new = refresh_choices()
        return [gr.update(choices=none + new[k]) for k, _ in lists] + [gr.update(choices=new["slug_patches"])]

    refresh.click(fn=on_refresh, inputs=[], outputs=[c for _, c in lists] + [patches])
    names = panel.control_names()
    fields = [(c, paster(n)) for c, n in zip(controls, names)]
    return controls, fields


def paster(control: str) -> Callable[[dict], Any]:
    """infotext_fields entry: the value ``control`` takes from pasted parameters (None: unchanged)."""
    return lambda params: panel.paste_value(params, control)


def attribution_output(gen: Generation | None, processed: Any) -> None:
    """Append the first sampling run's attribution plot (and a matching infotext) to the outputs."""
    if gen is None or gen.runs is None or not gen.settings.plot:
        return
    history = next((c.history for c in gen.runs.runs if c.history), None)
    if history is None:
        return
    processed.images.append(attribution_plot(history, gen.names))
    infotexts = getattr(processed, "infotexts", None)
    if isinstance(infotexts, list):
        infotexts.append(infotexts[0] if infotexts else "")


def refuse(error: Exception) -> Callable:
    """A stand-in for sampling that fails with the panel's error: never sample without the asked-for edits."""
    def fail(*a: Any, **k: Any) -> Any:
        raise RuntimeError(f"UnlearnKit: {error}") from error

    return fail


class UnlearnKitScript(Script):
    """The always-visible panel in txt2img and img2img."""

    sorting_priority = 20

    def title(self) -> str:
        return "UnlearnKit"

    def show(self, is_img2img: bool) -> Any:
        return AlwaysVisible

    def ui(self, is_img2img: bool) -> list:
        import gradio as gr
        from modules import sd_models, shared

        def refresh() -> dict[str, list[str]]:
            sd_models.list_models()
            return choices(shared, sd_models)

        controls, self.infotext_fields = build_ui(gr, choices(shared, sd_models), refresh)
        self.paste_field_names = []
        return controls

    def process(self, p: Any, *args: Any) -> None:
        from modules import processing, sd_models, shared

        settings = panel.from_controls(args)
        p.unlearnkit = gen = Generation(settings)
        try:
            settings.check()
            FILES.keep(used_files(settings, shared) if settings.enabled else [])
            p.extra_generation_params.update(
                panel.infotext_params(settings, shard_hashes(sd_models, settings))
            )
            signature = edit_conds(p, shared, processing, settings) if settings.edits_text_encoder else ()
            if not settings.edits_text_encoder:
                use_cond_caches(p, processing, signature)
            if settings.composing:
                plan_mixture(gen, shared, sd_models)
                if not hasattr(shared.sd_model, "forge_objects"):
                    wrap_method(
                        p,
                        "sample",
                        lambda original, *a, **k: self._sample_a1111(gen, shared, original, *a, **k),
                    )
        except Exception as exc:  # the webui would log it and sample anyway: refuse instead
            logger.exception("UnlearnKit: cannot apply the panel's settings")
            p.sample = refuse(exc)

    @staticmethod
    def _sample_a1111(gen: Generation, shared: Any, original: Callable, *a: Any, **k: Any) -> Any:
        unet, mixer = a1111_mixture(gen, shared.sd_model)
        restore = install_forward(unet, mixer)
        try:
            return original(*a, **k)
        finally:
            restore()

    def process_before_every_sampling(self, p: Any, *args: Any, **kwargs: Any) -> None:
        gen = getattr(p, "unlearnkit", None)
        if gen is None or not gen.settings.composing or gen.runs is None:
            return
        forge = p.sd_model.forge_objects
        try:
            forge.unet = forge_mixture(gen, forge.unet, p.sd_model, forge_load_unet)
        except Exception as exc:
            logger.exception("UnlearnKit: cannot build the shard mixture")
            fail = refuse(exc)
            clone = forge.unet.clone()
            clone.set_model_unet_function_wrapper(lambda apply_model, args: fail())
            forge.unet = clone

    def postprocess(self, p: Any, processed: Any, *args: Any) -> None:
        attribution_output(getattr(p, "unlearnkit", None), processed)
