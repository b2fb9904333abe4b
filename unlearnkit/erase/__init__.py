"""Erase: robust concept erasure in the text encoder (AdvUnlearn, Zhang et al. NeurIPS 2024).

Text-encoder files (layouts, dims, loading, swapping) live in ``unlearnkit.textencoders``.
"""
from .advunlearn import EraseConfig, TrainResult, train_erased_encoder
from .components import Components, load_components, prepare_components
from .measure import AttackSpec, Detector, Scorer, attack_report
from .prompt_attack import PromptAttackConfig, prompt_attack
from .soft_attack import SoftAttackConfig, soft_prompt_attack

__all__ = [
    "AttackSpec", "Components", "Detector", "Scorer", "EraseConfig", "PromptAttackConfig", "SoftAttackConfig",
    "TrainResult", "attack_report", "load_components", "prepare_components", "prompt_attack",
    "soft_prompt_attack", "train_erased_encoder",
]
