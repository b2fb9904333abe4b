"""An SD1.x-compatible ``CLIPTokenizer`` built offline from the BPE merges open_clip ships."""
from __future__ import annotations

import functools
import gzip
import json
import logging
import os
import tempfile
from pathlib import Path

log = logging.getLogger(__name__)

N_MERGES = 49152 - 256 - 2  # as in CLIP's SimpleTokenizer
MAX_LENGTH = 77
BOS, EOS = "<|startoftext|>", "<|endoftext|>"


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP reversible byte -> printable unicode map."""
    bs = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))


def open_clip_bpe_path() -> Path:
    """open_clip's bpe_simple_vocab_16e6.txt.gz, found in the installed package."""
    import open_clip

    path = Path(open_clip.__file__).parent / "bpe_simple_vocab_16e6.txt.gz"
    if not path.is_file():
        raise FileNotFoundError(f"open_clip's BPE vocabulary not found at {path}; reinstall open-clip-torch")
    return path


def vocab_and_merges(bpe_path: Path) -> tuple[dict[str, int], list[str]]:
    """CLIP's vocabulary (token -> id, 49,408 entries) and merge list, as SimpleTokenizer builds them."""
    lines = gzip.open(bpe_path).read().decode("utf-8").split("\n")[1 : N_MERGES + 1]
    merges = [tuple(line.split()) for line in lines]
    units = list(bytes_to_unicode().values())
    vocab = units + [u + "</w>" for u in units] + ["".join(m) for m in merges] + [BOS, EOS]
    return {tok: i for i, tok in enumerate(vocab)}, [" ".join(m) for m in merges]


def write_tokenizer_files(folder: Path, bpe_path: Path | None = None) -> tuple[Path, Path]:
    """Write vocab.json and merges.txt (transformers' CLIPTokenizer format) into folder."""
    vocab, merges = vocab_and_merges(bpe_path or open_clip_bpe_path())
    folder.mkdir(parents=True, exist_ok=True)
    vocab_file, merges_file = folder / "vocab.json", folder / "merges.txt"
    vocab_file.write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    merges_file.write_text("#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8")
    return vocab_file, merges_file


@functools.lru_cache(maxsize=1)
def clip_tokenizer():
    """SD1.x tokenizer: 77 tokens, BOS 49406, EOS 49407, padded with 49407."""
    from transformers import CLIPTokenizer

    with tempfile.TemporaryDirectory(prefix="unlearnkit-tok-") as tmp:
        vocab_file, merges_file = write_tokenizer_files(Path(tmp))
        tok = CLIPTokenizer(
            os.fspath(vocab_file), os.fspath(merges_file), model_max_length=MAX_LENGTH,
            bos_token=BOS, eos_token=EOS, unk_token=EOS, pad_token=EOS,
        )
    log.debug("built CLIPTokenizer with %d tokens", len(tok))
    return tok


def tokenize(prompts: list[str], max_length: int = MAX_LENGTH):
    """Token ids (B, max_length) padded with EOS like SD1.x; raises on an empty list."""
    if isinstance(prompts, str) or not prompts:
        raise ValueError(f"prompts: expected a non-empty list of strings, got {prompts!r}")
    return clip_tokenizer()(
        list(prompts), padding="max_length", max_length=max_length, truncation=True, return_tensors="pt"
    ).input_ids
