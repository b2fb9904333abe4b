"""Every capability at real size (SD1.5, SDXL, CLIP ViT-L/14 architectures with seeded random weights).

    python bench/real_size.py --json                  # last stdout line: one JSON object
    python bench/real_size.py --only compose          # a capability, or operation names / name fragments

Compose runs inside the real ComfyUI 0.3.75 engine (bench/real_size_compose.py), Erase's encoder swaps
there too and its AdvUnlearn training through the core (bench/real_size_erase.py), Unlearn's SLUG through
the core (bench/real_size_unlearn.py). Each operation runs in fp32 and in the half dtype ComfyUI would load
on a GPU (fp16 on CUDA, bf16 on the CPU), in its own process on one thread: its seconds, its peak resident
memory (the process and the ComfyUI child it starts; on CUDA also the most memory allocated) and its check.
A half-precision operation's result is also compared with the fp32 one's. Small latents (8x8, 64 px) and
few steps keep it within minutes on a CPU; the models are full size. On the CPU, operations run side by
side, one per core, as many as the free memory holds by their measured peaks (bench/real_size_schedule.py);
``peak_rss_together_gb`` is the most the whole process tree held at once (summed per process, so pages they
share count more than once), ``machine_peak_used_gb`` the most memory the machine had in use.
Keys of the last line: ops, failed, skipped, peak_rss_gb (the largest operation), peak_rss_together_gb,
wall_minutes, compose_sd15_lora4_seconds_ratio (4 LoRA shards ÷ the base alone, same steps, fp32), the same
for SDXL, slug_vitl_seconds, advunlearn_sd15_seconds_per_iteration (fp32), and the same for the half dtype.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
ROOT = Path(__file__).resolve().parent
sys.path[:0] = [str(ROOT.parent), str(ROOT), str(ROOT.parent / "tests" / "fixtures")]

import numpy as np  # noqa: E402
import torch  # noqa: E402
from real_size_schedule import TreeMemory, run_side_by_side  # noqa: E402

OP_TIMEOUT_S = 1800
WEIGHT_SUFFIXES = (".safetensors", ".pt", ".bin", ".ckpt")
MEMORY_MARGIN_GB = 1.0  # kept free beside the operations' estimated peaks


@dataclass(frozen=True)
class Op:
    name: str  # "<capability>.<what>.<dtype>"
    run: str  # "module:function" called as function(*args, dtype, work)
    args: tuple = ()
    gb: tuple[float, float] = (4.0, 3.0)  # about the peak resident memory it needs: fp32, half precision
    span: tuple[float, float] = (2.0, 2.0)  # about the minutes it takes on one CPU core: fp32, half

    @property
    def needs_gb(self) -> float:
        return self.gb[0] if self.dtype == "fp32" else self.gb[1]

    @property
    def minutes(self) -> float:
        return self.span[0] if self.dtype == "fp32" else self.span[1]

    @property
    def capability(self) -> str:
        return self.name.split(".")[0]

    @property
    def dtype(self) -> str:
        return self.name.rsplit(".", 1)[1]


def half_dtype() -> str:
    return "fp16" if torch.cuda.is_available() else "bf16"


COMPOSE, SWAP = "real_size_compose:run_compose", "real_size_erase:run_swaps"
SLUG = "real_size_unlearn:run_slug_"
OPERATIONS = [  # name, "module:function", its first arguments, (GB, minutes) as measured here: (fp32, half)
    ("compose.sd15.lora4", COMPOSE, ("lora4", "sd15"), (6, 3.5), (1.6, 1.7)),
    ("compose.sdxl.lora4", COMPOSE, ("lora4", "sdxl"), (16.5, 9), (4.6, 8.2)),
    ("compose.sd15.full2", COMPOSE, ("full2", "sd15"), (8, 4.5), (1.5, 1.2)),
    ("erase.swap.sd1", SWAP, ("sd1",), (3, 2.5), (0.5, 0.8)),
    ("erase.swap.sd2", SWAP, ("sd2",), (6, 4), (1.1, 1.5)),
    ("erase.swap.sdxl", SWAP, ("sdxl",), (11, 7), (2.1, 2)),
    ("erase.advunlearn.sd15", "real_size_advunlearn:run_advunlearn", (), (8, 5.5), (0.8, 0.9)),
    ("unlearn.slug.vitl", SLUG + "open_clip", (), (9, 7.5), (1.2, 3.5)),
    ("unlearn.slug.sd15te", SLUG + "sd15_text", (), (4.5, 3.5), (0.9, 2.1)),
    ("unlearn.patch.sd15te", "real_size_unlearn:run_patches", (), (2, 2), (0.2, 0.3)),
]


def operations() -> list[Op]:
    ops = [Op(f"{name}.{dtype}", run, args, gb, minutes)
           for dtype in ("fp32", half_dtype()) for name, run, args, gb, minutes in OPERATIONS]
    order = {"compose": 0, "erase": 1, "unlearn": 2}
    return sorted(ops, key=lambda op: (order[op.capability], op.name.rsplit(".", 1)[0], op.dtype != "fp32"))


def selected(ops: list[Op], only: list[str]) -> list[Op]:
    capabilities = {op.capability for op in ops}
    return [op for op in ops if not only or any(
        o == op.capability if o in capabilities else o in op.name for o in only)]


def peak_memory_gb() -> dict:
    """Peak resident memory of this process and of its largest finished child (ComfyUI), in GiB."""
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    child = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2**20
    out = {"peak_rss_gb": max(own, child), "rss_self_gb": own, "rss_comfyui_gb": child}
    if torch.cuda.is_available():
        out["cuda_max_allocated_gb"] = torch.cuda.max_memory_allocated() / 2**30
    return out


def run_here(op: Op, work: Path) -> dict:
    """Run ``op`` in this process: its result with seconds and peak memory."""
    import importlib

    module, function = op.run.split(":")
    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
    if torch.cuda.is_available():
        os.environ["UNLEARNKIT_COMFY_DEVICE"] = "cuda"  # the ComfyUI child runs on the CPU otherwise
    work.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    result = getattr(importlib.import_module(module), function)(*op.args, op.dtype, work)
    result.setdefault("seconds", time.perf_counter() - start)
    result["wall_seconds"] = time.perf_counter() - start
    return {"name": op.name, **result, **peak_memory_gb()}


def available_gb() -> float:
    import psutil

    return psutil.virtual_memory().available / 2**30


def run_child(op: Op, work: Path, free_gb: float) -> dict:
    """Run ``op`` in a fresh process (memory is given back in between); a crash is a failed operation.
    An operation that needs more memory than the machine had free (``free_gb``) is skipped (listed, never
    hidden)."""
    if free_gb < op.needs_gb:
        return {"name": op.name, "ok": None, "seconds": 0.0,
                "check": f"skipped: needs about {op.needs_gb:.0f} GB, {free_gb:.1f} GB free here"}
    cmd = [sys.executable, str(Path(__file__).resolve()), "--op", op.name, "--out", str(work)]
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    start = time.perf_counter()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=OP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        return {"name": op.name, "ok": False, "check": f"timed out after {OP_TIMEOUT_S} s",
                "seconds": time.perf_counter() - start}
    finally:
        drop_weight_files(work)
    (work / "op.log").write_text(proc.stdout + proc.stderr)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        tail = " | ".join((proc.stderr or proc.stdout).strip().splitlines()[-3:]) or "no output"
        return {"name": op.name, "ok": False, "seconds": time.perf_counter() - start,
                "check": f"crashed (exit {proc.returncode}): {tail[-600:]}"}
    return json.loads(lines[-1])


def drop_weight_files(work: Path) -> None:
    """Delete the weight files an operation wrote (GBs each at this size); its logs and kept arrays stay."""
    for path in work.rglob("*"):
        if path.is_file() and path.suffix in WEIGHT_SUFFIXES:
            path.unlink()


def against_fp32(result: dict, work_root: Path) -> None:
    """A half-precision operation's kept output against the fp32 operation's (its own tolerance)."""
    name, kept = result["name"], result.get("kept")
    if kept is None or name.endswith(".fp32"):
        return
    reference = work_root / (name.rsplit(".", 1)[0] + ".fp32") / kept
    if not reference.is_file():
        return
    ours, theirs = np.load(work_root / name / kept), np.load(reference)
    error = float(np.abs(ours - theirs).max() / max(np.abs(theirs).max(), 1e-12))
    fine = error <= result["tolerance_vs_fp32"]
    result["error_vs_fp32"] = error
    result["ok"] = bool(result["ok"] and fine)
    result["check"] += f"; vs fp32 {error:.2g} (tolerance {result['tolerance_vs_fp32']:g})"


def summary(results: list[dict]) -> dict:
    def value(name: str, key: str):
        found = [r.get(key) for r in results if r["name"] == name]
        return found[0] if found else None

    half = half_dtype()
    out = {"device": "cuda" if torch.cuda.is_available() else "cpu", "half_dtype": half,
           "ops": [{k: r.get(k) for k in ("name", "ok", "seconds", "peak_rss_gb", "check")} for r in results],
           "failed": [r["name"] for r in results if r.get("ok") is False],
           "skipped": [r["name"] for r in results if r.get("ok") is None],
           "peak_rss_gb": max((r.get("peak_rss_gb") or 0.0 for r in results), default=0.0)}
    for dtype in ("fp32", half):
        suffix = "" if dtype == "fp32" else f"_{dtype}"
        for arch in ("sd15", "sdxl"):
            out[f"compose_{arch}_lora4_seconds_ratio{suffix}"] = value(f"compose.{arch}.lora4.{dtype}",
                                                                       "seconds_ratio")
        out[f"slug_vitl_seconds{suffix}"] = value(f"unlearn.slug.vitl.{dtype}", "seconds")
        out[f"advunlearn_sd15_seconds_per_iteration{suffix}"] = value(
            f"erase.advunlearn.sd15.{dtype}", "seconds_per_iteration")
    return out


def print_line(result: dict) -> None:
    status = {True: "ok  ", False: "FAIL", None: "skip"}[result.get("ok")]
    print(f"{result['name']:34s} {status} {result.get('seconds', 0):8.1f} s "
          f"{result.get('peak_rss_gb') or 0:6.2f} GB  {result.get('check', '')}", flush=True)


def rounded(value):
    if isinstance(value, float):
        return round(value, 4)
    if isinstance(value, dict):
        return {k: rounded(v) for k, v in value.items()}
    if isinstance(value, list):
        return [rounded(v) for v in value]
    return value


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    p.add_argument("--only", nargs="*", default=[], help="capabilities or operation name fragments")
    p.add_argument("--list", action="store_true", help="list the operations and exit")
    p.add_argument("--out", default="unlearnkit-out/bench-real-size")
    p.add_argument("--jobs", type=int, default=1 if torch.cuda.is_available() else os.cpu_count(),
                   help="operations at once (default: the CPU cores; 1 on CUDA)")
    p.add_argument("--op", help=argparse.SUPPRESS)  # internal: run one operation in this process
    args = p.parse_args(argv)
    ops = {op.name: op for op in operations()}
    if args.op:
        print(json.dumps(rounded(run_here(ops[args.op], Path(args.out)))))
        return 0
    plan = selected(list(ops.values()), args.only)
    if args.list:
        print("\n".join(op.name for op in plan))
        return 0
    root = Path(args.out).resolve()
    root.mkdir(parents=True, exist_ok=True)

    start, free_gb = time.perf_counter(), available_gb()
    print(f"{len(plan)} operations, {args.jobs} at once, {free_gb:.1f} GB free", flush=True)
    with TreeMemory() as memory:
        done = run_side_by_side(plan, lambda op: run_child(op, root / op.name, free_gb), args.jobs,
                                free_gb - MEMORY_MARGIN_GB, on_done=lambda op, r: print_line(r))
    results = [done[op.name] for op in plan]
    print("\nEvery operation, half precision against fp32:")
    for result in results:
        against_fp32(result, root)
        print_line(result)
    (root / "results.json").write_text(json.dumps(rounded(results), indent=1))
    out = rounded({**summary(results), "jobs": args.jobs, "wall_minutes": (time.perf_counter() - start) / 60,
                   "peak_rss_together_gb": memory.peak_gb, "machine_peak_used_gb": memory.machine_peak_gb})
    print(json.dumps(out) if args.json else json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
