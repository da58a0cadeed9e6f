"""Moving a collated batch (nested dicts / lists of tensors) to a device, shared by the trainer, eval and tools; the
batch's self-occlusion masks at a given size, shared by the models and their criteria."""
import torch
import torch.nn.functional as F


def to_device(batch, device, skip=()):
    """Tensors of a (nested) batch moved to ``device`` (non-blocking from pinned memory), top-level keys in ``skip``
    dropped (the trainer skips ``datasets.EVAL_ONLY_KEYS``); uint8 ``imgs`` become float in [0, 1] there (the same
    values as the dataset's float images: uint8 / 255)."""
    if torch.is_tensor(batch):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, dict):
        out = {k: to_device(v, device) for k, v in batch.items() if k not in skip}
        if torch.is_tensor(out.get("imgs")) and out["imgs"].dtype == torch.uint8:
            out["imgs"] = out["imgs"].float().div_(255.0)
        return out
    if isinstance(batch, list):
        return [to_device(v, device) for v in batch]
    return batch


def self_occlusion(batch, size):
    """(B, 6, 1, H, W) float {0, 1}: ``batch['mask']`` (B, 6, h, w), the self-occlusion masks (DDAD; 0 on the ego
    car's own body), at ``size`` (H, W) by nearest neighbour; None when the batch has none."""
    if "mask" not in batch:
        return None
    return F.interpolate(batch["mask"].float(), tuple(size), mode="nearest")[:, :, None]
