"""Data-parallel training across processes with torch.distributed, as launched by torchrun.

Each rank carries its own slice of the B streams and its own recurrent state; DDP averages the
gradients. Everything else a rank must agree on (loss, clock, stop request, validation sums,
the carried state at checkpoint time) goes through the few collectives below. A single process
is the world of size 1, where every collective is the identity and nothing is imported.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch

from charlstm.errors import CharlstmError


class DistributedError(CharlstmError):
    """The process group could not be set up, or the layout does not divide among ranks."""


@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1
    local_rank: int = 0
    local_size: int = 1
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.size > 1

    def rows(self, n: int) -> slice:
        """This rank's share of n rows (streams): contiguous, sizes differ by at most one."""
        return slice(self.rank * n // self.size, (self.rank + 1) * n // self.size)


def launched_by_torchrun() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def local_size() -> int:
    """Processes sharing this machine (1 unless torchrun started several)."""
    return max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))


def init_world(device: torch.device) -> World:
    """Join the process group torchrun describes in the environment (NCCL on CUDA, gloo on the
    CPU); each CUDA rank takes the GPU of its local rank. Without torchrun: a world of one."""
    if not launched_by_torchrun():
        return World(device=device)
    import torch.distributed as dist

    rank, size = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device.type == "cuda":
        if local_rank >= torch.cuda.device_count():
            raise DistributedError(
                f"local rank {local_rank} has no GPU: this node has "
                f"{torch.cuda.device_count()}; use --nproc-per-node at most that"
            )
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
        backend = "nccl"
    elif device.type == "cpu":
        backend = "gloo"
    else:
        raise DistributedError(f"multi-process training runs on CUDA or the CPU, not {device}")
    try:
        dist.init_process_group(backend=backend, device_id=device if backend == "nccl" else None)
    except Exception as e:
        raise DistributedError(f"could not join the process group ({backend}): {e}") from e
    return World(rank, size, local_rank, local_size(), device)


def shutdown(world: World, clean: bool) -> None:
    """Leave the process group. After a clean end every rank first waits for the others: a rank
    tearing gloo down while a peer's last messages are in flight can abort the process
    ("terminate called without an active exception"). After an error it leaves at once, as a
    peer may be gone and a barrier would hang."""
    if world.active:
        import torch.distributed as dist

        if dist.is_initialized():
            if clean:
                dist.barrier()
            dist.destroy_process_group()


def sum_across(world: World, values: list[float]) -> list[float]:
    """Element-wise sum over ranks, in float64 so sums of losses stay exact enough."""
    if not world.active:
        return values
    import torch.distributed as dist

    t = torch.tensor(values, dtype=torch.float64, device=world.device)
    dist.all_reduce(t)
    return t.tolist()


def broadcast(world: World, value: Any) -> Any:
    """Rank 0's value of a picklable object, on every rank."""
    if not world.active:
        return value
    import torch.distributed as dist

    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def gather_rows(world: World, t: torch.Tensor, dim: int) -> torch.Tensor:
    """Concatenate every rank's equal-sized slice of `t` along `dim` (rank order), on every rank."""
    if not world.active:
        return t
    import torch.distributed as dist

    parts = [torch.empty_like(t) for _ in range(world.size)]
    dist.all_gather(parts, t.contiguous())
    return torch.cat(parts, dim=dim)
