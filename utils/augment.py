"""Colour augmentation of the networks' input images (monodepth2's and the authors' ColorJitter).

The losses compare the original images; only the copy the networks see (``batch["imgs_net"]``) is jittered, with
one random jitter per sample shared by its 6 cameras and 3 frames (so the temporal and cross-view pairs stay
consistent), applied with probability ``p``.
"""
import torch
import torchvision.transforms.v2.functional as TF

BRIGHTNESS, CONTRAST, SATURATION, HUE = 0.2, 0.2, 0.2, 0.1  # monodepth2's ranges, as the authors'


def color_jitter(imgs, p=0.5, generator=None):
    """imgs (B, ..., 3, H, W) float in [0, 1] -> jittered copy, same shape. Per sample, with probability p:
    brightness, contrast and saturation factors in [1 - 0.2, 1 + 0.2] and a hue shift in [-0.1, 0.1], in that
    order (a fixed order, unlike torchvision's random one: simpler to reproduce)."""
    out = imgs.clone()
    u = torch.rand(imgs.shape[0], 5, generator=generator).tolist()  # drawn on the CPU: no device round trip
    for b in range(imgs.shape[0]):
        if u[b][0] >= p:
            continue
        x = imgs[b].reshape(-1, *imgs.shape[-3:])
        x = TF.adjust_brightness(x, 1 + BRIGHTNESS * (2 * u[b][1] - 1))
        x = TF.adjust_contrast(x, 1 + CONTRAST * (2 * u[b][2] - 1))
        x = TF.adjust_saturation(x, 1 + SATURATION * (2 * u[b][3] - 1))
        x = TF.adjust_hue(x, HUE * (2 * u[b][4] - 1))
        out[b] = x.clamp(0, 1).reshape(imgs.shape[1:])
    return out
