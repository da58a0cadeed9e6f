"""Process-group helpers: the same code runs as one process or under torchrun (one or several nodes)."""
import os

import torch
import torch.distributed as dist


def init_distributed(device_opt="auto"):
    """Initialise torch.distributed when launched by torchrun. Returns (rank, world_size, device)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device_opt == "auto":
        device_opt = "cuda" if torch.cuda.is_available() else "cpu"
    if device_opt == "cuda":
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    else:
        device = torch.device(device_opt)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"--device {device_opt} asked for, but torch sees no CUDA device")
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return rank, world, device


def is_main():
    return not dist.is_initialized() or dist.get_rank() == 0


def world_size():
    return dist.get_world_size() if dist.is_initialized() else 1


def barrier():
    if dist.is_initialized():
        dist.barrier()


def all_reduce_sum(t):
    """Sum a tensor over ranks in place (no-op for one process) and return it."""
    if dist.is_initialized():
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def cleanup():
    if dist.is_initialized():
        dist.destroy_process_group()
