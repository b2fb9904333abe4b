"""Training loops of the tiny world: VAE, CLIP (contrastive), judges, UNet (eps-prediction with caption
dropout)."""

from __future__ import annotations

import logging
from collections.abc import Callable

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from .data import STYLES, TEMPLATES, Subset, all_captions, caption
from .models import image_embeds, text_embeds

log = logging.getLogger(__name__)


def jitter(images: torch.Tensor, gen: torch.Generator, shift: int = 1) -> torch.Tensor:
    """Random translation by up to `shift` px (edge padding keeps the paper colour): (B, 3, H, W)."""
    b, _, h, w = images.shape
    padded = F.pad(images, (shift,) * 4, mode="replicate")
    dx, dy = (torch.randint(0, 2 * shift + 1, (2,), generator=gen).tolist())
    return padded[:, :, dy : dy + h, dx : dx + w]


def warmup_lr(step: int, base_lr: float, warmup: int = 50) -> float:
    return base_lr * min(1.0, (step + 1) / warmup)


def fit(model: torch.nn.Module, loss_fn: Callable[[int], torch.Tensor], steps: int, lr: float, desc: str,
        param_groups: list | None = None) -> list[float]:
    """AdamW with linear warm-up and grad clipping; loss_fn(step) draws its own batch. Returns the loss
    curve."""
    if steps < 1:
        raise ValueError(f"steps: expected >= 1, got {steps}")
    opt = torch.optim.AdamW(param_groups or model.parameters(), lr=lr, weight_decay=0.0)
    model.train()
    losses: list[float] = []
    bar = tqdm(range(steps), desc=desc, mininterval=5.0, leave=False)
    for step in bar:
        for g in opt.param_groups:
            g["lr"] = warmup_lr(step, lr)
        loss = loss_fn(step)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        losses.append(float(loss.detach()))
        if step % 50 == 0:
            bar.set_postfix(loss=f"{sum(losses[-50:]) / len(losses[-50:]):.4f}")
        if step % max(1, steps // 10) == 0 or step == steps - 1:
            log.info("%s step %d/%d loss %.4f", desc, step + 1, steps, sum(losses[-50:]) / len(losses[-50:]))
    model.eval()
    return losses


def train_vae(
    vae, data: Subset, steps: int, seed: int, batch: int = 64, lr: float = 1e-3, kl_weight: float = 1e-6
) -> float:
    """Reconstruction + tiny KL (as SD's VAE); returns the latents' std (for scaling_factor)."""
    gen = torch.Generator().manual_seed(seed)

    def loss_fn(step: int) -> torch.Tensor:
        x = jitter(data.images[torch.randint(0, len(data), (batch,), generator=gen)], gen)
        post = vae.encode(x).latent_dist
        z = post.mean + post.std * torch.randn(post.mean.shape, generator=gen)
        return F.mse_loss(vae.decode(z).sample, x) + kl_weight * post.kl().mean()

    fit(vae, loss_fn, steps, lr, "vae")
    with torch.no_grad():
        return float(vae.encode(data.images).latent_dist.mean.std())


def caption_ids(digits: torch.Tensor, styles: torch.Tensor, gen: torch.Generator, p_style: float,
                p_uncond: float, index: dict[str, int]) -> list[int]:
    """Random caption (template, with the style suffix with prob p_style, "" with prob p_uncond) per
    sample."""
    n = len(digits)
    templates = torch.randint(0, len(TEMPLATES), (n,), generator=gen).tolist()
    with_style = (torch.rand(n, generator=gen) < p_style).tolist()
    uncond = (torch.rand(n, generator=gen) < p_uncond).tolist()
    out = []
    for d, s, t, ws, u in zip(digits.tolist(), styles.tolist(), templates, with_style, uncond):
        out.append(index[""] if u else index[caption(d, STYLES[s] if ws else None, t)])
    return out


def caption_matches(
    digits: torch.Tensor, styles: torch.Tensor, cap_digits: torch.Tensor, cap_styles: torch.Tensor
) -> torch.Tensor:
    """(B_img, B_cap) 1.0 where a caption (style −1 = any) describes an image."""
    same_digit = digits[:, None] == cap_digits[None, :]
    same_style = (styles[:, None] == cap_styles[None, :]) | (cap_styles[None, :] < 0)
    return (same_digit & same_style).float()


def soft_cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return -(targets / targets.sum(1, keepdim=True) * logits.log_softmax(1)).sum(1).mean()


def train_clip(clip, data: Subset, token_ids: torch.Tensor, steps: int, seed: int, batch: int = 256,
               lr: float = 2e-3, p_style: float = 0.7) -> None:
    """CLIP's symmetric contrastive loss with every matching caption in the batch counted as a positive."""
    gen = torch.Generator().manual_seed(seed)
    caps = all_captions()
    index = {c: i for i, c in enumerate(caps)}
    length = int((token_ids != token_ids[0, -1]).sum(1).max()) + 1  # longest caption + EOS
    ids = token_ids[:, :length]

    def loss_fn(step: int) -> torch.Tensor:
        pick = torch.randint(0, len(data), (batch,), generator=gen)
        d, s = data.digits[pick], data.styles[pick]
        cap = torch.tensor(caption_ids(d, s, gen, p_style, 0.0, index))
        has_style = torch.tensor([" style" in caps[i] for i in cap.tolist()])
        img = F.normalize(image_embeds(clip, jitter(data.images[pick], gen)), dim=-1)
        txt = F.normalize(text_embeds(clip, ids[cap]), dim=-1)
        logits = clip.logit_scale.exp().clamp(max=100) * img @ txt.T  # (B, B)
        match = caption_matches(d, s, d, torch.where(has_style, s, -1))
        return (soft_cross_entropy(logits, match) + soft_cross_entropy(logits.T, match.T)) / 2

    fit(clip, loss_fn, steps, lr, "clip")


def train_judge(
    judge, data: Subset, labels: torch.Tensor, steps: int, seed: int, batch: int = 128, lr: float = 2e-3
) -> None:
    gen = torch.Generator().manual_seed(seed)

    def loss_fn(step: int) -> torch.Tensor:
        pick = torch.randint(0, len(data), (batch,), generator=gen)
        return F.cross_entropy(judge(jitter(data.images[pick], gen)), labels[pick])

    fit(judge, loss_fn, steps, lr, f"judge/{judge.n_classes}")


def train_unet(unet, latents: tuple[torch.Tensor, torch.Tensor], data: Subset, text_states: torch.Tensor,
               steps: int, seed: int, desc: str, batch: int = 64, lr: float = 1e-3, p_style: float = 0.8,
               p_uncond: float = 0.1) -> list[float]:
    """ε-prediction loss ‖ε − ε_θ(√ᾱ z + √(1−ᾱ) ε, t, c)‖² (DDPM / SD) with caption dropout for CFG.

    latents: (mean, std) of the VAE posterior, already multiplied by the scaling factor, (N, 4, 8, 8).
    text_states: (len(all_captions()), 77, 64) frozen text-encoder states.
    """
    from .models import build_scheduler

    if len(data) == 0:
        raise ValueError(f"{desc}: empty training set")
    gen = torch.Generator().manual_seed(seed)
    index = {c: i for i, c in enumerate(all_captions())}
    alphas_bar = build_scheduler("ddpm").alphas_cumprod
    mean, std = latents

    def loss_fn(step: int) -> torch.Tensor:
        pick = torch.randint(0, len(data), (batch,), generator=gen)
        z = mean[pick] + std[pick] * torch.randn(mean[pick].shape, generator=gen)
        t = torch.randint(0, len(alphas_bar), (batch,), generator=gen)
        eps = torch.randn(z.shape, generator=gen)
        ab = alphas_bar[t].view(-1, 1, 1, 1)
        x_t = ab.sqrt() * z + (1 - ab).sqrt() * eps
        cond = text_states[caption_ids(data.digits[pick], data.styles[pick], gen, p_style, p_uncond, index)]
        return F.mse_loss(unet(x_t, t, encoder_hidden_states=cond).sample, eps)

    return fit(unet, loss_fn, steps, lr, desc)


