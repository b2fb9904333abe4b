"""Compose (CDM): a slider between two style shards, the gated mixture with attribution, forgetting "bold"
with its record, and a request outside a user's rights refused — on the tiny world's style shards."""
from __future__ import annotations

import json
from pathlib import Path

import torch

from ... import io
from ...compose.attribution import credit, weight_trajectory
from ...compose.diffusers_unet import ComposedUNet
from ...compose.gate_model import ClassifierGate, load_gate
from ...compose.gates import StaticGate
from ...compose.routing import Evaluation
from ...compose.shards import Shard, ShardSet
from ...plots import line_panels
from ...tinyworld import store
from ...tinyworld.data import caption
from ...tinyworld.models import build_scheduler
from ...tinyworld.styles import STYLES
from . import artifacts
from .panels import Panel, Section, labelled_grid, rate, save, tile
from .world import DemoSettings, Progress, TinyWorld

SLIDER_PAIR = ("bold", "slanted")
SLIDER_DIGITS = (0, 3, 5, 8)
FORGOTTEN = "bold"


def composed(shards: ShardSet, gate) -> ComposedUNet:
    """A diffusers UNet whose every step mixes the shards' x0 with ``gate``'s weights (CDM), evaluated as
    every host does by default ('fast': a shard runs only on the samples whose weight reaches 1 %, and
    above σ 1 each sample uses one shard drawn from its weights)."""
    acp = build_scheduler("ddim").alphas_cumprod
    return ComposedUNet([s.model for s in shards], shards.names, gate, acp, evaluation=Evaluation())


def style_set(world: TinyWorld) -> ShardSet:
    """The four style shards, with file hashes (forget records) and access tags (rights)."""
    shards = []
    for name, unet in world.style_shards().items():
        path = store.unet_path(f"style/{name}")
        tags = frozenset({"public"} if name != "inverted" else {"licensed:inverted-artist"})
        shards.append(Shard(name, unet, tags=tags, source=str(path.relative_to(store.WEIGHTS_DIR.parent)),
                            sha256=io.file_sha256(path)))
    return ShardSet(tuple(shards))


def slider_sweep(world: TinyWorld, settings: DemoSettings, out: Path, positions: int = 7) -> Panel:
    """Columns: slider weight of the second shard from 0 to 1 (static gate); rows: digits; judged style."""
    a, b = SLIDER_PAIR
    shards = {n: world.unet(f"style/{n}") for n in SLIDER_PAIR}
    prompts = [caption(d, None, 0) for d in SLIDER_DIGITS]
    weights = [i / (positions - 1) for i in range(positions)]
    acp = build_scheduler("ddim").alphas_cumprod
    columns = []  # one sampling run per slider position, the same noise in each (the host sees no repeats)
    for w in weights:
        gate = StaticGate(list(shards), [1 - w, w])
        columns.append(world.images(ComposedUNet(list(shards.values()), list(shards), gate, acp), prompts,
                                    settings))
    share_b = [rate(world.judged("style", col) == STYLES.index(b)) for col in columns]
    rows = [torch.stack([col[r] for col in columns]) for r in range(len(prompts))]
    image = labelled_grid(rows, [f'"{p}"' for p in prompts], [f"{b} {w:.2f}" for w in weights],
                          scale=settings.scale)
    return Panel(
        f"Slider: {a} shard → {b} shard", image=save(image, out, "compose_slider.png"),
        caption=("Two style shards mixed at every sampler step with fixed slider weights (columns: weight "
                 "of the "
                 f"{b} shard, the {a} shard gets the rest; same prompts and noise in every column). Share of "
                 f"images the style judge calls {b}, left to right: "
                 + ", ".join(f"{s:.2f}" for s in share_b) + "."),
        numbers={"slider_weights": [round(w, 3) for w in weights], f"judged_{b}": share_b})


def gated_attribution(world: TinyWorld, settings: DemoSettings, out: Path, gate_net) -> list[Panel]:
    """The prompt-reading CDM gate over all four shards: images, who made each, and weight trajectories."""
    shards = style_set(world)
    names = shards.names
    digits = (1, 4, 7)
    prompts = [caption(d, s, 0) for s in names for d in digits]
    unet = composed(shards, ClassifierGate(gate_net, names, shards.priors))
    images = world.images(unet, prompts, settings)
    history = unet.composer.history
    weights = credit(weight_trajectory(history))  # (B, N)
    top = weights.argmax(1)
    judged = world.judged("style", images)
    prompted = torch.tensor([STYLES.index(s) for s in names for _ in digits])
    top_style = torch.tensor([STYLES.index(names[i]) for i in top.tolist()])
    following, attribution = rate(judged == prompted), rate(top_style == judged)
    rows = [images[i * len(digits):(i + 1) * len(digits)] for i in range(len(names))]
    notes = [[f"{names[int(top[k])]} {float(weights[k].max()):.0%}" for k in range(i * len(digits),
                                                                              (i + 1) * len(digits))]
             for i in range(len(names))]
    grid = labelled_grid(rows, [f"prompted {n}" for n in names], [f"digit {d}" for d in digits], notes,
                         scale=settings.scale)
    traj = weight_trajectory(history)  # (S, B, N)
    picks = [i * len(digits) for i in range(len(names))]  # the first sample of each prompted style
    plots = [line_panels([[traj[:, b, k].tolist() for k in range(len(names))]], names,
                         [f'"{prompts[b]}": {names[int(top[b])]} ({float(weights[b].max()):.0%})'],
                         "sampling step (noisy to clean)", "weight", panel_size=(300, 170))
             for b in picks]
    return [
        Panel("Gated mixture: who made each image", image=save(grid, out, "compose_gated.png"),
              caption=("All four style shards composed with the CDM classifier gate (it reads the noisy "
                       "latent "
                       "and the prompt at every step). Under each image: the shard with the most credit "
                       "(its "
                       f"mean gate weight). Style judged as prompted: {following:.2f}; top-credit shard = "
                       "the "
                       f"style the judge sees: {attribution:.2f}."),
              numbers={"style_judged_as_prompted": following, "attribution_matches_judge": attribution,
                       "images": len(prompts)}),
        Panel("Attribution: gate weight of each shard along sampling", image=save(tile(plots, 2), out,
                                                                                   "compose_attribution.png"),
              caption=("The weight of every shard at every sampling step for the first image of each "
                       "prompted "
                       "style (CDM Fig. 3); the title gives the image's top shard and its credit. "
                       + trajectory_story([prompts[b] for b in picks], traj[:, picks], names)),
              numbers={"credit_of_top_shard": [round(float(weights[b].max()), 3) for b in picks]}),
    ]


def trajectory_story(prompts: list[str], traj: torch.Tensor, names: list[str], settled: float = 0.95) -> str:
    """Say in words which trajectories are decided from the first step and where a shard took over later.

    traj: (S, B, N) weights of the B images shown."""
    late = []
    for b, prompt in enumerate(prompts):
        top = int(traj[-1, b].argmax())
        if float(traj[0, b, top]) < settled:
            step = int((traj[:, b, top] > 0.5).float().argmax())
            late.append(f'for "{prompt}" the {names[top]} shard took over at step {step} of {traj.shape[0]}')
    decided = len(prompts) - len(late)
    text = (f"{decided} of {len(prompts)} images are decided at the first step: the gate reads the style "
            f"named "
            f"in the prompt.")
    return text + (" Where the noisy latent disagrees with the prompt the weights move as the image forms: "
                   + "; ".join(late) + "." if late else "")


def forgetting(world: TinyWorld, settings: DemoSettings, out: Path, gate_net) -> Panel:
    """Prompt for bold with all shards, then with the bold shard dropped; the forget record."""
    shards = style_set(world)
    prompts = [caption(d, FORGOTTEN, 0) for d in range(10)]
    before = world.images(composed(shards, ClassifierGate(gate_net, shards.names, shards.priors)), prompts,
                          settings)
    rest, record = shards.forget(FORGOTTEN, reason="demo: the bold artist withdrew consent")
    after = world.images(composed(rest, ClassifierGate(gate_net, rest.names, rest.priors)), prompts, settings)
    bold = STYLES.index(FORGOTTEN)
    rate_before, rate_after = (rate(world.judged("style", x) == bold) for x in (before, after))
    image = labelled_grid([before, after], ["all 4 shards", f"{FORGOTTEN} dropped"],
                          [str(d) for d in range(10)], scale=settings.scale)
    return Panel(
        f'Forgetting the "{FORGOTTEN}" source', image=save(image, out, "compose_forget.png"),
        caption=(f'"a handwritten digit N in {FORGOTTEN} style" for N = 0..9, same noise. Dropping the shard '
                 f"is exact forgetting: no weight trained on that source is loaded afterwards, nothing is "
                 f"retrained, and the gate's logit for it is masked. Share judged {FORGOTTEN}: "
                 f"{rate_before:.2f} "
                 f"before, {rate_after:.2f} after. The record below is appended to the forget log."),
        numbers={"judged_bold_before": rate_before, "judged_bold_after": rate_after,
                 "remaining": list(rest.names)},
        text=json.dumps(json.loads(record.to_json()), indent=1))


def rights(world: TinyWorld) -> Panel:
    """A user holding only "public" asks for the licensed shard: refused, and told what is allowed."""
    shards = style_set(world)
    held = {"public"}
    allowed = shards.allowed(held)
    try:
        shards.restrict(held, requested=["inverted", "bold"])
        refusal = "(served — this should not happen)"
    except PermissionError as exc:
        refusal = f"PermissionError: {exc}"
    refused = refusal.startswith("PermissionError")
    tags = "\n".join(f"  {s.name:9s} needs {sorted(s.tags)}" for s in shards)
    return Panel(
        "Rights: a request outside the user's rights is refused",
        caption=(f"Each shard carries the rights a user needs. A user holding {sorted(held)} asks for 2 "
                 f"shards, one of which needs a right the user lacks: the request is "
                 f"{'refused' if refused else 'SERVED'}, never silently narrowed. Without a request the user "
                 f"is served {len(allowed)} of {len(shards)} shards: {allowed}."),
        numbers={"refused": refused, "allowed": allowed},
        text=f"shards:\n{tags}\nuser rights: {sorted(held)}\nrequest: ['inverted', 'bold']\n-> {refusal}")


def compose_section(world: TinyWorld, settings: DemoSettings, out: Path, progress: Progress) -> Section:
    section = Section("compose", "Compose — shards mixed per sampler step (CDM)",
                      "Each style shard is the base UNet fine-tuned on one private data source (one "
                      "\"artist\"). "
                      "A composition mixes the shards' denoised estimates at every step; dropping a shard "
                      "forgets its source exactly.")
    gate_net = load_gate(str(artifacts.path("gate")))
    with progress.task("compose: slider sweep"):
        section.panels.append(slider_sweep(world, settings, out))
    with progress.task("compose: gated mixture"):
        section.panels.extend(gated_attribution(world, settings, out, gate_net))
    with progress.task("compose: forgetting bold"):
        section.panels.append(forgetting(world, settings, out, gate_net))
    section.panels.append(rights(world))
    return section
