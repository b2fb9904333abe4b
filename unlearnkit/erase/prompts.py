"""Prompts as the text encoder sees them: token ids, token embeddings, and K prepended adversarial tokens.

AdvUnlearn and UnlearnDiffAtk put the adversarial tokens right after the start token:
``[BOS, δ_1..δ_K, prompt tokens, EOS, pad…]`` truncated to the tokenizer's length (77 in SD).
The encoder is run on token *embeddings* through its own ``forward`` (a hook replaces the
token-embedding lookup), so this works on every transformers version and every CLIP text model.
"""
from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Sequence

import torch

logger = logging.getLogger(__name__)

PLACEHOLDER_ID = 0  # id written where an adversarial token sits (never EOS, so EOS pooling still works)


def special_ids(tokenizer) -> set[int]:
    """Start, end and padding ids of a (CLIP) tokenizer."""
    ids = {tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id}
    return {int(i) for i in ids if i is not None}


def tokenize(tokenizer, prompts: Sequence[str]) -> torch.Tensor:
    """Token ids (B, L) padded to the tokenizer's full length, as SD conditions on them."""
    if isinstance(prompts, str) or len(prompts) == 0:
        raise ValueError(f"prompts: expected a non-empty list of strings, got {prompts!r}")
    length = int(tokenizer.model_max_length)
    out = tokenizer(
        list(prompts), padding="max_length", max_length=length, truncation=True, return_tensors="pt"
    )
    return out.input_ids


def content_lengths(ids: torch.Tensor, specials: set[int]) -> torch.Tensor:
    """Number of non-special tokens per row: (B, L) -> (B,)."""
    mask = torch.ones_like(ids, dtype=torch.bool)
    for s in specials:
        mask &= ids != s
    return mask.sum(1)


def check_prompts(tokenizer, prompts: Sequence[str], name: str) -> torch.Tensor:
    """Token ids of prompts, refusing an empty list or a prompt that tokenises to nothing (only
    BOS/EOS/padding)."""
    if isinstance(prompts, str) or not isinstance(prompts, Sequence) or len(prompts) == 0:
        raise ValueError(f"{name}: expected at least one prompt, got {prompts!r}")
    bad_types = [p for p in prompts if not isinstance(p, str)]
    if bad_types:
        raise ValueError(f"{name}: prompts must be strings, got {bad_types[:3]!r}")
    ids = tokenize(tokenizer, prompts)
    empty = [p for p, n in zip(prompts, content_lengths(ids, special_ids(tokenizer)).tolist()) if n == 0]
    if empty:
        raise ValueError(
            f"{name}: prompt(s) {empty[:3]!r} tokenise to nothing (only start/end/padding tokens)"
        )
    return ids


def token_embedding(encoder: torch.nn.Module) -> torch.nn.Embedding:
    """The token-embedding table of a CLIP text model (transformers 4: under ``text_model``)."""
    tower = getattr(encoder, "text_model", encoder)
    return tower.embeddings.token_embedding


@contextlib.contextmanager
def _token_embeddings_replaced(encoder: torch.nn.Module, embeds: torch.Tensor) -> Iterator[None]:
    """Within the block, the encoder's token-embedding lookup returns ``embeds`` instead."""
    handle = token_embedding(encoder).register_forward_hook(lambda _m, _i, _o: embeds)
    try:
        yield
    finally:
        handle.remove()


def encode_ids(encoder: torch.nn.Module, ids: torch.Tensor) -> torch.Tensor:
    """SD conditioning: last hidden states (B, L, W) for token ids (B, L)."""
    return encoder(input_ids=ids.to(token_embedding(encoder).weight.device)).last_hidden_state


def encode_embeds(encoder: torch.nn.Module, ids: torch.Tensor, embeds: torch.Tensor) -> torch.Tensor:
    """Last hidden states (B, L, W) for token embeddings (B, L, W); ``ids`` give the EOS position only."""
    if embeds.shape[:2] != ids.shape:
        raise ValueError(f"embeds: expected shape {tuple(ids.shape)} + (width,), got {tuple(embeds.shape)}")
    with _token_embeddings_replaced(encoder, embeds):
        return encode_ids(encoder, ids)


def insert_after_bos(x: torch.Tensor, prefix: torch.Tensor) -> torch.Tensor:
    """[x_0; prefix; x_1 … x_{L-K-2}; x_{L-1}]: K entries go in after BOS, the final token (EOS/pad) stays.

    x (B, L, …) ids or embeddings, prefix (B, K, …); returns (B, L, …).
    """
    length, k = x.shape[1], prefix.shape[1]
    if not 0 <= k <= length - 2:
        raise ValueError(f"prefix: expected 0..{length - 2} tokens, got {k}")
    return torch.cat([x[:, :1], prefix, x[:, 1 : length - k - 1], x[:, length - 1 :]], dim=1)


def prefixed_ids(ids: torch.Tensor, k: int) -> torch.Tensor:
    """Ids with k placeholders after BOS: (B, L) -> (B, L)."""
    fill = torch.full((ids.shape[0], k), PLACEHOLDER_ID, dtype=ids.dtype, device=ids.device)
    return insert_after_bos(ids, fill)


def prefixed_embeds(embeds: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
    """[e_BOS; δ; e_rest]: embeds (B, L, W), delta (B or 1, K, W) -> (B, L, W)."""
    return insert_after_bos(embeds, delta.to(embeds.dtype).expand(embeds.shape[0], -1, -1))


def encode_with_prefix(
    encoder: torch.nn.Module, ids: torch.Tensor, delta: torch.Tensor | None
) -> torch.Tensor:
    """Conditioning for prompts with continuous tokens δ (1 or B, K, W) prepended; δ None: the plain
    prompts."""
    if delta is None or delta.shape[1] == 0:
        return encode_ids(encoder, ids)
    ids = ids.to(delta.device)
    embeds = prefixed_embeds(token_embedding(encoder)(ids), delta)
    return encode_embeds(encoder, prefixed_ids(ids, delta.shape[1]), embeds)


def with_prefix_tokens(ids: torch.Tensor, prefix: torch.Tensor) -> torch.Tensor:
    """Discrete version: [BOS, prefix tokens, rest…]; ids (B, L), prefix (K,) or (B, K)."""
    prefix = prefix.to(ids.device)
    return insert_after_bos(ids, (prefix[None] if prefix.dim() == 1 else prefix).expand(ids.shape[0], -1))


def decode(tokenizer, ids: torch.Tensor) -> list[str]:
    """Readable prompts for ids (B, L), special tokens dropped."""
    return [tokenizer.decode(row.tolist(), skip_special_tokens=True) for row in ids]
