"""Datasets: ``build_dataset(opt, split)`` and the batch ``collate`` (item layout: docs/ARCHITECTURE.md)."""
import torch


def build_dataset(opt, split):
    """The dataset named by ``opt.dataset`` for ``split`` ("train" or "val")."""
    if opt.dataset == "nuscenes":
        from datasets.nuscenes_dataset import NuScenesDataset
        return NuScenesDataset(opt, split)
    if opt.dataset == "ddad":
        from datasets.ddad_dataset import DDADDataset
        return DDADDataset(opt, split)
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
