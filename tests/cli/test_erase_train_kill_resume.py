"""``erase train`` killed with SIGKILL mid-run, then ``--resume``: the same file as an uninterrupted run.

Three CLI processes (~40 s on a shared 2-core machine), so opt-in:
``python -m pytest -m slow tests/erase/test_train_kill_resume.py``.
"""
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from unlearnkit import io


def command(pipeline_dir, out, *extra):
    return [
        sys.executable, "-m", "unlearnkit", "erase", "train", "--cpu", "--pipeline", str(pipeline_dir),
        "--concept", "a photo of a cat", "--retain", "a photo of a dog", "--out", str(out), "--iterations",
        "40", "--warmup", "5", "--attack-steps", "2", "--sampler-steps", "3", "--lr", "1e-3", "--bank-size",
        "1", "--checkpoint-every", "10", "--no-progress", *extra,
    ]


@pytest.mark.slow
def test_sigkill_then_resume_gives_the_uninterrupted_file(pipeline_dir, tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(sys.path)}
    whole, cut = tmp_path / "whole.safetensors", tmp_path / "cut.safetensors"
    subprocess.run(command(pipeline_dir, whole), env=env, check=True, capture_output=True, timeout=300)

    folder = tmp_path / "cut.safetensors.checkpoints"
    proc = subprocess.Popen(
        command(pipeline_dir, cut), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.monotonic() + 240
    while not (folder / "checkpoint-0000010.pt").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    steps = sorted(p.name for p in folder.iterdir() if p.suffix == ".pt")
    assert not cut.exists() and steps and steps[-1] < "checkpoint-0000040.pt", steps  # killed mid-run

    done = subprocess.run(
        command(pipeline_dir, cut, "--resume"), env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert '"resumed_from": ' in done.stdout and '"resumed_from": 0' not in done.stdout
    (a, meta_a), (b, meta_b) = io.load_state_dict(cut), io.load_state_dict(whole)
    assert (
        meta_a == meta_b and a.keys() == b.keys()
    )  # (header bytes differ: safetensors orders metadata per process)
    assert all(torch.equal(a[k], b[k]) for k in a)
