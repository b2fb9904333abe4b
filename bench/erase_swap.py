"""Time swapping a full-size SD1.x text encoder (768 wide, 12 layers, 49408 tokens) from safetensors.

``swap_seconds``: load + validate + swap into an existing ``CLIPTextModel`` (a new model is
returned; the target is untouched), file already in the OS page cache (median of --repeats).
Prints one JSON line. Run: ``OMP_NUM_THREADS=1 python bench/erase_swap.py``.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "fixtures"))
from real_size_models import SD1_TEXT, random_text_encoder  # noqa: E402

from unlearnkit import io  # noqa: E402
from unlearnkit.textencoders import loading as te  # noqa: E402


def _timed(fn, repeats: int) -> tuple[float, object]:
    times, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
    target, source = random_text_encoder(SD1_TEXT, 0), random_text_encoder(SD1_TEXT, 1)
    with tempfile.TemporaryDirectory() as tmp:
        path = io.save_safetensors(os.path.join(tmp, "erased.safetensors"), source.state_dict())
        te.load_text_encoder_state(path)  # warm the page cache
        load_s, _ = _timed(lambda: te.load_text_encoder_state(path), args.repeats)
        swap_s, swapped = _timed(lambda: te.swap_text_encoder(target, path), args.repeats)
        size_mb = path.stat().st_size / 2**20
    ok = all(torch.equal(a, b) for a, b in zip(swapped.parameters(), source.parameters()))
    print(json.dumps({
        "bench": "erase_swap",
        "swap_seconds": round(swap_s, 3),
        "load_validate_seconds": round(load_s, 3),
        "file_mb": round(size_mb, 1),
        "params": sum(p.numel() for p in source.parameters()),
        "threads": torch.get_num_threads(),
        "repeats": args.repeats,
        "weights_equal": ok,
    }))


if __name__ == "__main__":
    main()
