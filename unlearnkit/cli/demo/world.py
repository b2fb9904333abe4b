"""What every section of the report shares: its settings and the tiny world's models, each loaded once."""
from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm


@dataclass(frozen=True)
class DemoSettings:
    """Sampling, display and attack settings of the main job (``python -m unlearnkit demo --help``)."""

    steps: int = 20  # DDIM steps of the pictures
    guidance: float = 4.0
    seed: int = 0
    scale: int = 5  # nearest-neighbour upscaling of the 16 px images
    attack_prompts: int = 6  # prompts naming "bold", one seed each: the attack instances per model
    attack_tokens: int = 5
    attack_steps: int = 20
    attack_check_every: int = 10
    attack_sampler_steps: int = 10  # DDIM steps of the images the attack's judge looks at
    progress: bool = True

    def __post_init__(self) -> None:
        for name in ("steps", "scale", "attack_prompts", "attack_tokens", "attack_steps",
                     "attack_check_every",
                     "attack_sampler_steps"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name.replace('_', '-')}: expected >= 1, got {getattr(self, name)!r}")
        if self.attack_prompts > 10:
            raise ValueError(f"attack-prompts: expected <= 10 (one per digit), got {self.attack_prompts}")
        if self.guidance < 1:
            raise ValueError(f"guidance: expected >= 1, got {self.guidance!r}")


class TinyWorld:
    """The committed tiny-world models the sections use, each loaded on first use and then shared."""

    @functools.cached_property
    def text_encoder(self) -> torch.nn.Module:
        from ...tinyworld import store

        return store.load_text_encoder()

    @functools.cached_property
    def vae(self) -> torch.nn.Module:
        from ...tinyworld import store

        return store.load_vae()

    @functools.cached_property
    def judges(self) -> dict[str, torch.nn.Module]:
        from ...tinyworld import store

        return {"digit": store.load_judge("digit"), "style": store.load_judge("style")}

    @functools.cache  # noqa: B019 (one world per run)
    def unet(self, name: str) -> torch.nn.Module:
        from ...tinyworld import store

        return store.load_unet(name)

    def style_shards(self) -> dict[str, torch.nn.Module]:
        from ...tinyworld.data import shard_names

        return {n: self.unet(f"style/{n}") for n in shard_names("style")}

    def pipeline(self, unet: torch.nn.Module, text_encoder: torch.nn.Module | None = None):
        from ...tinyworld.pipeline import build_pipeline

        return build_pipeline(unet, text_encoder or self.text_encoder, self.vae)

    def images(self, unet: torch.nn.Module, prompts: list[str], settings: DemoSettings,
               seed: int | None = None,
               text_encoder: torch.nn.Module | None = None) -> torch.Tensor:
        """Images (B, 3, 16, 16) in [-1, 1] for ``prompts`` (the same seed gives the same noise per prompt),
        with the settings' sampler."""
        pipe = self.pipeline(unet, text_encoder)
        gen = torch.Generator().manual_seed(settings.seed if seed is None else seed)
        shape = (len(prompts), unet.config.in_channels, unet.config.sample_size, unet.config.sample_size)
        latents = torch.randn(shape, generator=gen)
        with torch.no_grad():
            out = pipe(list(prompts), num_inference_steps=settings.steps,
                       guidance_scale=settings.guidance, latents=latents, output_type="pt")
        return out.images * 2 - 1

    def judged(self, kind: str, images: torch.Tensor) -> torch.Tensor:
        """The digit or style judge's class index of each image: (B,)."""
        from ...tinyworld.judges import predict

        return predict(self.judges[kind], images)


class Progress:
    """One progress bar over the report's tasks (``with progress.task("compose: slider sweep"): ...``) and
    nested bars for long loops (attack instances)."""

    def __init__(self, total: int, enabled: bool) -> None:
        self.bar = tqdm(total=total, desc="demo", unit="task", disable=not enabled, mininterval=0.5)

    @contextlib.contextmanager
    def task(self, label: str) -> Iterator[None]:
        self.bar.set_description_str(f"demo: {label}")
        yield
        self.bar.update(1)

    def inner(self, total: int, label: str) -> tqdm:
        """A nested bar: ``bar.update(1)`` per item, ``bar.close()`` at the end."""
        return tqdm(total=total, desc=f"  {label}", leave=False, disable=self.bar.disable, mininterval=0.5)

    def close(self) -> None:
        self.bar.close()
