"""``erase train`` in 2 CPU processes (torchrun + gloo, through accelerate's Accelerator): both run and agree.

~45 s on a shared 2-core machine, so opt-in: ``python -m pytest -m slow tests/erase/test_distributed.py``.
"""
import json
import os
import socket
import subprocess
import sys

import pytest


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_cpu_processes_train_one_identical_encoder(pipeline_dir, tmp_path):
    out = tmp_path / "erased.safetensors"
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
        str(free_port()), "-m", "unlearnkit", "erase", "train", "--cpu", "--pipeline", str(pipeline_dir),
        "--concept", "a photo of a cat", "--retain", "a photo of a dog", "--out", str(out), "--iterations",
        "3", "--warmup", "1", "--attack-steps", "2", "--sampler-steps", "3", "--lr", "1e-3", "--bank-size",
        "1", "--no-progress",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    for rank in (0, 1):
        assert f"process {rank} of 2: weights agree across processes" in proc.stderr, proc.stderr[-3000:]
    printed = json.loads(proc.stdout.strip().splitlines()[-1])
    assert printed["processes"] == 2 and printed["steps"] == 3 and out.is_file()
