"""Tensor parallelism of the text decoder over torch.distributed (Megatron-LM's layout, Shoeybi et
al., arXiv 1909.08053, Sec. 3): each rank keeps its share of the attention heads and of the MLP's
intermediate channels, so a layer needs one all-reduce after the attention's output projection
and one after the MLP's down projection. The LM head is split by vocabulary and its logits
gathered; the vision tower, the embedding and the norms are replicated. docs/DESIGN.md, "Tensor
parallelism", has the table of what is split how and the traffic per step.

Every rank ends a collective with the same bits (ring all-reduce and all-gather hand each rank the
same result), so the ranks sample the same tokens and make the same pruning decisions.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist

#: Seconds a collective waits for the other ranks before every rank fails with an error.
DEFAULT_TIMEOUT_S = 300.0


class TensorParallelError(RuntimeError):
    """A collective failed: another rank died, hung past the timeout, or the group is broken."""


@dataclass
class TensorParallel:
    """This process's place in the tensor-parallel group: ``rank`` of ``world``."""

    rank: int
    world: int
    device: torch.device = torch.device("cpu")  # where this rank's shard lives
    group: object = None  # the process group; None is torch.distributed's default group

    def all_reduce(self, x: torch.Tensor) -> torch.Tensor:
        """The sum of ``x`` over the ranks (in place; returns ``x``)."""
        self._run(dist.all_reduce, x, group=self.group)
        return x

    def all_gather(self, x: torch.Tensor, dim: int) -> torch.Tensor:
        """Every rank's ``x`` (all the same shape), concatenated along ``dim`` in rank order."""
        x = x.contiguous()
        parts = [torch.empty_like(x) for _ in range(self.world)]
        self._run(dist.all_gather, parts, x, group=self.group)
        return torch.cat(parts, dim)

    def broadcast(self, x: torch.Tensor) -> torch.Tensor:
        """Rank 0's ``x`` on every rank (in place; returns ``x``)."""
        self._run(dist.broadcast, x, 0, group=self.group)
        return x

    def combine_monitor(self, vis_scores: torch.Tensor, type_mass: torch.Tensor):
        """The monitor's outputs over all heads from each rank's over its own: the visual scores
        are head means over equal head counts (their mean over ranks), the per-head type masses
        ``[B, H_rank, 4]`` are concatenated in head order."""
        return self.all_reduce(vis_scores.clone()) / self.world, self.all_gather(type_mass, 1)

    def _run(self, collective, *args, **kwargs) -> None:
        try:
            collective(*args, **kwargs)
        except RuntimeError as error:  # gloo's and NCCL's errors (DistBackendError) are these
            first_line = (str(error).splitlines() or [type(error).__name__])[0]
            raise TensorParallelError(
                f"tensor-parallel rank {self.rank} of {self.world}: a collective failed, so "
                f"another rank has failed or timed out ({first_line})") from error


def init_tensor_parallel(tp: int, device, timeout_s: float = DEFAULT_TIMEOUT_S) -> TensorParallel:
    """Join (or start, from torchrun's ``RANK`` / ``WORLD_SIZE`` / ``MASTER_ADDR`` environment)
    the default process group: NCCL on CUDA, gloo on the CPU, collectives timing out after
    ``timeout_s``. Its size must be ``tp``. Seeds every rank's default generator alike, so
    unseeded sampling draws the same numbers everywhere."""
    device = torch.device(device)
    if device.type == "cuda" and device.index is None:  # one GPU per rank, as torchrun numbers them
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if not dist.is_available():
        raise RuntimeError("tp > 1 needs torch.distributed, which this torch build lacks")
    if not dist.is_initialized():
        missing = [name for name in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")
                   if name not in os.environ]
        if missing:
            raise RuntimeError(f"tp={tp}: no process group and no {', '.join(missing)} in the "
                               f"environment; launch with torchrun --nproc-per-node {tp} (or "
                               f"call torch.distributed.init_process_group first)")
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend, timeout=timedelta(seconds=timeout_s))
    world = dist.get_world_size()
    if world != tp:
        raise ValueError(f"tp={tp} but the process group has {world} processes")
    parallel = TensorParallel(dist.get_rank(), world, device)
    seed = torch.randint(0, 2**62, (1,), dtype=torch.long, device=device)
    torch.manual_seed(int(parallel.broadcast(seed).item()))
    return parallel
