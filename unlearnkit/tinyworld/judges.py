"""The measuring instruments: judge accuracy, CLIP zero-shot accuracy and judge-FID."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .data import WORDS
from .models import JudgeNet, image_embeds, text_embeds
from .styles import STYLES
from .tokenizer import tokenize


@torch.no_grad()
def predict(judge: JudgeNet, images: torch.Tensor, batch: int = 1000) -> torch.Tensor:
    """Class indices (B,) for images (B, 3, 16, 16) in [-1, 1]."""
    return torch.cat([judge(images[i : i + batch]).argmax(1) for i in range(0, len(images), batch)])


def accuracy(judge: JudgeNet, images: torch.Tensor, labels: torch.Tensor) -> float:
    if len(images) != len(labels):
        raise ValueError(f"labels: expected {len(images)} labels, got {len(labels)}")
    return float((predict(judge, images) == labels).float().mean())


@torch.no_grad()
def features(judge: JudgeNet, images: torch.Tensor, batch: int = 1000) -> torch.Tensor:
    """The judge's penultimate 64-d features, float64 (B, 64)."""
    return torch.cat([judge.features(images[i : i + batch]) for i in range(0, len(images), batch)]).double()


def sqrtm_psd(m: torch.Tensor) -> torch.Tensor:
    """Symmetric PSD square root via eigh."""
    vals, vecs = torch.linalg.eigh((m + m.T) / 2)
    return (vecs * vals.clamp(min=0).sqrt()) @ vecs.T


def frechet_distance(a: torch.Tensor, b: torch.Tensor) -> float:
    """‖μ_a − μ_b‖² + tr(Σ_a + Σ_b − 2 (Σ_a^½ Σ_b Σ_a^½)^½) (Heusel et al. 2017) for features (N, D)."""
    if a.dim() != 2 or b.dim() != 2 or a.shape[1] != b.shape[1] or min(len(a), len(b)) < 2:
        raise ValueError(
            f"features: expected two (N >= 2, D) matrices, got {tuple(a.shape)} and {tuple(b.shape)}"
        )
    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a, cov_b = torch.cov(a.T), torch.cov(b.T)
    root_a = sqrtm_psd(cov_a)
    cross = torch.linalg.eigvalsh(root_a @ cov_b @ root_a).clamp(min=0).sqrt().sum()
    return float((mu_a - mu_b).pow(2).sum() + torch.trace(cov_a) + torch.trace(cov_b) - 2 * cross)


def judge_fid(judge: JudgeNet, generated: torch.Tensor, real: torch.Tensor) -> float:
    """Fréchet distance in the judge's feature space between generated and real images."""
    return frechet_distance(features(judge, generated), features(judge, real))


def digit_prompts() -> list[str]:
    """CLIP zero-shot class prompts for the 10 digits."""
    return [f"a handwritten digit {w}" for w in WORDS]


def style_prompts() -> list[str]:
    return [f"a handwritten digit in {s} style" for s in STYLES]


@torch.no_grad()
def zero_shot_predict(clip, images: torch.Tensor, class_prompts: list[str]) -> torch.Tensor:
    """argmax_k cos(f_img, f_txt(k)) (CLIP zero-shot): class indices (B,)."""
    txt = F.normalize(text_embeds(clip, tokenize(class_prompts)), dim=-1)
    img = F.normalize(
        torch.cat([image_embeds(clip, images[i : i + 1000]) for i in range(0, len(images), 1000)]), dim=-1
    )
    return (img @ txt.T).argmax(1)


def zero_shot_accuracy(clip, images: torch.Tensor, labels: torch.Tensor, class_prompts: list[str]) -> float:
    return float((zero_shot_predict(clip, images, class_prompts) == labels).float().mean())
