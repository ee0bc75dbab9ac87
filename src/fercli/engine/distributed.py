"""Multi-process training on PyTorch's own engine: torchrun starts the processes, `fer train` joins them.

torchrun sets RANK, WORLD_SIZE and LOCAL_RANK (and the rendezvous address) in each process's
environment. With WORLD_SIZE > 1, `fer train` joins the process group (nccl on CUDA, gloo on the
CPU), wraps the network in DistributedDataParallel, trains its own slice of every global batch,
all-reduces its metrics, and leaves files and progress to rank 0. The metrics' collectives are CPU-GPU
sync points on CUDA; the agreements of the loop (stop now? show progress? the run folder's name) go
over a second, gloo group of CPU tensors, so they never wait for the GPU.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
from torch import nn

from fercli.errors import USAGE, FerError


@dataclass
class Group:
    """This process's place in the job; the defaults describe a plain single-process run."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    device: torch.device | None = None  # where collective tensors live (the training device)
    control: object | None = None  # the gloo group for CPU-side agreements (None: the default group is gloo)

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world > 1


def from_env() -> Group:
    """Rank and world size as torchrun set them, without joining anything yet."""
    try:
        world = int(os.environ.get("WORLD_SIZE", "1"))
        rank = int(os.environ.get("RANK", "0"))
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    except ValueError as e:
        raise FerError(f"torchrun environment is malformed ({e})", USAGE) from e
    return Group(rank=rank, world=world, local_rank=local_rank)


def join(group: Group, device: torch.device) -> torch.device:
    """Join the process group; returns the device this rank trains on (cuda:LOCAL_RANK on CUDA)."""
    if not group.active:
        group.device = device
        return device
    import torch.distributed as dist

    if device.type == "cuda":
        if device.index is not None:  # every rank would take the same GPU, and nccl fails on that
            raise FerError(f"--device {device} under torchrun: each process takes cuda:LOCAL_RANK; give "
                           "--device cuda (or auto) and choose GPUs with CUDA_VISIBLE_DEVICES", USAGE)  # fmt: skip
        device = torch.device("cuda", group.local_rank)
        torch.cuda.set_device(device)
        backend = "nccl"
    elif device.type == "cpu":
        backend = "gloo"
    else:
        raise FerError(f"multi-process training runs on CUDA (nccl) or the CPU (gloo), not {device.type}", USAGE)
    dist.init_process_group(backend=backend)
    if backend == "nccl":  # every rank creates it, in the same order
        group.control = dist.new_group(backend="gloo")
    group.device = device
    return device


def finish(group: Group) -> None:
    """Wait for every rank at the end of a run (and after rank 0's save on Ctrl-C), so that all end
    together and none reports before rank 0's files are written. How they then leave: `cli._exit`."""
    if group.active:
        import torch.distributed as dist

        dist.barrier()


def leave(group: Group) -> None:
    if group.active:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()


def wrap(model: nn.Module, group: Group) -> nn.Module:
    """DistributedDataParallel around the network: gradients are averaged across ranks in backward."""
    if not group.active:
        return model
    from torch.nn.parallel import DistributedDataParallel

    ids = [group.device] if group.device is not None and group.device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=ids)


def sum_all(values: list[float], group: Group) -> list[float]:
    """Element-wise sum of a few numbers over all ranks (sync)."""
    if not group.active:
        return values
    import torch.distributed as dist

    t = torch.tensor(values, dtype=torch.float64, device=group.device)
    dist.all_reduce(t)
    return t.tolist()


def any_rank(flag: bool, group: Group) -> bool:
    """True on every rank when it is true on any (so that all stop at the same step). Over the control
    group: no CPU-GPU sync."""
    if not group.active:
        return flag
    import torch.distributed as dist

    t = torch.tensor([float(flag)], dtype=torch.float64)
    dist.all_reduce(t, group=group.control)
    return bool(t.item() > 0)


def share_text(text: str, group: Group) -> str:
    """Rank 0's string on every rank (the run folder it created, a step count), over the control group."""
    if not group.active:
        return text
    import torch.distributed as dist

    raw = torch.zeros(4096, dtype=torch.uint8)
    if group.main:
        data = text.encode()[:4096]
        raw[: len(data)] = torch.tensor(list(data), dtype=torch.uint8)
    dist.broadcast(raw, src=0, group=group.control)
    return bytes(raw.tolist()).rstrip(b"\0").decode()


def same_buffers(modules: list[nn.Module], group: Group) -> None:
    """Give every rank rank 0's BatchNorm running statistics, so that all evaluate the model rank 0 saves."""
    if not group.active:
        return
    import torch.distributed as dist

    for m in modules:
        for b in m.buffers():
            dist.broadcast(b, src=0)
