"""One or many processes: accelerate's ``Accelerator`` when installed (launch with ``accelerate launch`` on
GPUs, or ``torchrun --nproc_per_node N`` on CPUs: gloo), else a single process.

Every process draws its own x_t; gradients (of the encoder and of the attack's δ) are averaged
across processes before each step, so all processes hold identical weights, δ and optimizer state.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass

import torch

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Runtime:
    rank: int = 0
    world: int = 1
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def _distributed(self) -> bool:
        return self.world > 1 and torch.distributed.is_available() and torch.distributed.is_initialized()

    def mean(self, tensor: torch.Tensor) -> torch.Tensor:
        """The mean of ``tensor`` over processes (itself with one process)."""
        if not self._distributed():
            return tensor
        out = tensor.detach().clone()
        torch.distributed.all_reduce(out)
        return out / self.world

    def mean_grads_(self, params: list[torch.nn.Parameter]) -> None:
        """Average the parameters' gradients over processes, in one flat all-reduce."""
        grads = [p.grad for p in params if p.grad is not None]
        if not grads or not self._distributed():
            return
        flat = self.mean(torch.cat([g.reshape(-1) for g in grads]))
        for g, part in zip(grads, flat.split([g.numel() for g in grads])):
            g.copy_(part.view_as(g))

    def check_agreement(self, params: list[torch.Tensor]) -> None:
        """Raise unless every process holds the same weights (a float64 checksum compared by min and max)."""
        if not self._distributed():
            return
        total = torch.stack([p.detach().double().sum() for p in params]).sum().reshape(1)
        low, high = total.clone(), total.clone()
        torch.distributed.all_reduce(low, op=torch.distributed.ReduceOp.MIN)
        torch.distributed.all_reduce(high, op=torch.distributed.ReduceOp.MAX)
        if not torch.equal(low, high):
            raise RuntimeError(
                f"processes disagree on the trained weights (checksums {float(low)} .. {float(high)})"
            )
        logger.info(
            "process %d of %d: weights agree across processes (checksum %.10g)",
            self.rank,
            self.world,
            float(total),
        )

    def barrier(self) -> None:
        if self._distributed():
            torch.distributed.barrier()


def make_runtime(cpu: bool = False) -> Runtime:
    """The runtime of this process: Accelerator's rank/world/device, or a plain single process."""
    try:
        from accelerate import Accelerator
    except ImportError:
        if int(os.environ.get("WORLD_SIZE", "1")) > 1:
            raise RuntimeError("launched with several processes but accelerate is not installed") from None
        device = "cuda" if torch.cuda.is_available() and not cpu else "cpu"
        return Runtime(device=torch.device(device))
    acc = Accelerator(cpu=cpu)
    rt = Runtime(acc.process_index, acc.num_processes, torch.device(acc.device))
    if rt.world > 1:
        logger.info("process %d of %d on %s", rt.rank, rt.world, rt.device)
    return rt
