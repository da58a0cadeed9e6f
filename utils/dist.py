"""Process-group helpers: the same code runs as one process or under torchrun (one or several nodes)."""
import os

import torch
import torch.distributed as dist

from utils.errors import UserError


class DeviceError(UserError, RuntimeError):
    """A --device that cannot work here (the message gives the fix)."""


def resolve_device(device_opt, local_rank=0, world=1, cuda_count=0, share=False):
    """``--device`` (auto, cpu, cuda, cuda:N) for the process of local rank ``local_rank`` -> torch.device.

    Under torchrun (world > 1) each process takes GPU ``local_rank`` of the ones it sees (CUDA_VISIBLE_DEVICES
    chooses them); an explicit ``cuda:N`` there would put every process on GPU N and is refused. ``share``
    (``--share_gpu``): more processes than GPUs, process i on GPU i mod the GPUs seen (to exercise the multi-process
    path on one GPU; not faster). ``cuda_count``: the GPUs torch sees (0 without CUDA). Raises DeviceError with the
    fix for anything that cannot work.
    """
    if device_opt == "auto":
        device_opt = "cuda" if cuda_count > 0 else "cpu"
    try:
        device = torch.device(device_opt)
    except RuntimeError:
        raise DeviceError(f"--device {device_opt!r}: expected auto, cpu, cuda or cuda:N") from None
    if device.type != "cuda":
        return device
    if cuda_count == 0:
        raise DeviceError(f"--device {device_opt} asked for, but torch sees no CUDA device (use --device cpu)")
    if device.index is not None and world > 1:
        raise DeviceError(f"--device {device_opt} with {world} processes would put every process on GPU "
                          f"{device.index}: use --device cuda (process i takes GPU LOCAL_RANK i) and choose the GPUs "
                          f"with CUDA_VISIBLE_DEVICES")
    index = local_rank if device.index is None else device.index
    if share and device.index is None:
        index = local_rank % cuda_count
    if index >= cuda_count:
        raise DeviceError(f"GPU {index} asked for (--device {device_opt}, LOCAL_RANK {local_rank}) but torch sees "
                          f"{cuda_count}: start at most {cuda_count} processes per machine (NGPU / --nproc_per_node), or "
                          f"--share_gpu true to put several on one GPU")
    return torch.device("cuda", index)


def init_distributed(device_opt="auto", share_gpu=False):
    """Initialise torch.distributed when launched by torchrun. Returns (rank, world_size, device).

    NCCL between GPUs; gloo on the CPU and with ``share_gpu`` (NCCL refuses two processes on one GPU)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    cuda_count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    device = resolve_device(device_opt, local_rank, world, cuda_count, share=share_gpu)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" and not share_gpu else "gloo")
    return rank, world, device


def sync_batchnorm(model, world, device, enabled=True):
    """Under DDP on GPUs, every BatchNorm layer of ``model`` becomes a SyncBatchNorm (statistics over the batch
    of all processes, not each process's own 6 images); returns (model, number of layers converted).

    BatchNorm sits in the ResNet encoders and in the authors' hourglass 3D decoder (BatchNorm3d); this project's
    residual decoder and the image necks use GroupNorm / InstanceNorm, which need no sync. The state dict keeps the
    same keys, so checkpoints load either way. Frozen models held outside the module tree (the stage-1 pose net of
    stage 2) are left alone; they run in eval mode.
    """
    n = sum(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in model.modules())
    if not (enabled and world > 1 and device.type == "cuda" and n):
        return model, 0
    return torch.nn.SyncBatchNorm.convert_sync_batchnorm(model), n


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
