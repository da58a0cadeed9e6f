"""Datasets: ``build_dataset(opt, split)`` and the batch ``collate`` (item layout: docs/ARCHITECTURE.md)."""
import torch

# Keys only the evaluation reads: training datasets leave them out (``eval_labels=False``).
EVAL_ONLY_KEYS = ("depth_gt", "occ_semantics", "occ_mask_camera", "occ_mask_lidar", "ray_origins")


def build_dataset(opt, split, eval_labels=True, uint8_images=False):
    """The dataset named by ``opt.dataset`` for ``split`` ("train" or "val"). ``eval_labels=False`` leaves out
    ``EVAL_ONLY_KEYS``; ``uint8_images=True`` returns ``imgs`` as uint8 (``utils.batch.to_device`` makes them
    float)."""
    if opt.dataset == "nuscenes":
        from datasets.nuscenes_dataset import NuScenesDataset
        return NuScenesDataset(opt, split, eval_labels, uint8_images)
    if opt.dataset == "ddad":
        if list(getattr(opt, "frame_stride", [1])) != [1]:
            from utils.errors import BadData
            raise BadData(f"--frame_stride {opt.frame_stride}: the DDAD loader takes the adjacent frames only (1)")
        from datasets.ddad_dataset import DDADDataset
        return DDADDataset(opt, split, eval_labels, uint8_images)
    raise ValueError(f"unknown dataset '{opt.dataset}' (expected nuscenes or ddad)")


def collate(batch):
    """Stack the tensors of a list of items along a new batch dimension; strings become lists."""
    out = {}
    for key in batch[0]:
        missing = [i for i, item in enumerate(batch) if key not in item]
        if missing:
            raise ValueError(f"collate: items {missing} lack '{key}' that item 0 has")
        values = [item[key] for item in batch]
        if isinstance(values[0], torch.Tensor):
            shapes = {tuple(v.shape) for v in values}
            if len(shapes) > 1:
                raise ValueError(f"collate: '{key}' has different shapes in one batch: {sorted(shapes)}")
            out[key] = torch.stack(values)
        elif isinstance(values[0], str):
            out[key] = values
        else:
            raise TypeError(f"collate: '{key}' is a {type(values[0]).__name__}, expected a tensor or a string")
    return out
