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
    """Sum a tensor over ranks; returns the sum on t's device (t itself for one process).

    NCCL reduces only CUDA tensors, so a CPU tensor travels through the current GPU there.
    """
    if not (dist.is_available() and dist.is_initialized()):
        return t
    via_gpu = dist.get_backend() == "nccl" and t.device.type != "cuda"
    buf = t.to(torch.device("cuda", torch.cuda.current_device())) if via_gpu else t.clone()
    dist.all_reduce(buf, op=dist.ReduceOp.SUM)
    return buf.to(t.device)


def cleanup():
    if dist.is_initialized():
        dist.destroy_process_group()
