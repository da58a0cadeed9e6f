"""Predicted occupancy volumes on disk, one file per evaluated sample (``eval.py --save_pred DIR``), small enough to
bring back from a GPU machine and study on a CPU (``tools/diagnostics/occ_errors.py``).

``<DIR>/<token>.npz`` holds: ``opacity`` (200, 200, 16) uint8 = round(255 * sqrt(opacity)) (low opacities keep their
resolution: steps of 0.0025 at 0.1, 0.0055 at 0.5; 0 below ``MIN_OPACITY``, a range no read-out uses), ``sem``
(200, 200, 16) uint8 semantic argmax (class ids; 255 where the opacity is below ``SEM_MIN_OPACITY``: the argmax of a
voxel no read-out calls occupied is noise that compresses badly), ``occupancy`` (200, 200, 16) uint8 Occ3D class
ids of the run's read-out (17 = free), ``threshold`` (the calibrated read-out's opacity threshold of the sample, NaN
without one), ``scene`` and ``token``. About 0.5 MB a sample.
"""
import os

import numpy as np

MIN_OPACITY = 0.01
SEM_MIN_OPACITY = 0.02


def encode_opacity(opacity):
    """float opacity in [0, 1] -> uint8 of sqrt (see the module's text)."""
    o = np.clip(np.asarray(opacity, dtype=np.float32), 0.0, 1.0)
    o = np.where(o < MIN_OPACITY, 0.0, o)
    return np.round(255.0 * np.sqrt(o)).astype(np.uint8)


def decode_opacity(code):
    """uint8 of ``encode_opacity`` -> float32 opacity."""
    return (np.asarray(code, dtype=np.float32) / 255.0) ** 2


def save_prediction(out_dir, token, scene, opacity, sem, occupancy, threshold=float("nan")):
    """Write ``<out_dir>/<token>.npz`` (compressed); returns its path."""
    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, f"{token}.npz")
    tmp = path + ".tmp.npz"  # whole files only: a killed eval leaves no half-written volume behind
    sem = np.where(np.asarray(opacity) >= SEM_MIN_OPACITY, np.asarray(sem, dtype=np.uint8), 255).astype(np.uint8)
    np.savez_compressed(tmp, opacity=encode_opacity(opacity), sem=sem,
                        occupancy=np.asarray(occupancy, dtype=np.uint8), threshold=np.float32(threshold),
                        scene=str(scene), token=str(token))
    os.replace(tmp, path)
    return path


def load_prediction(path):
    """{"opacity" float32, "sem" uint8, "occupancy" uint8, "threshold" float, "scene", "token"} of one file."""
    try:
        with np.load(path) as z:
            return {"opacity": decode_opacity(z["opacity"]), "sem": z["sem"], "occupancy": z["occupancy"],
                    "threshold": float(z["threshold"]), "scene": str(z["scene"]), "token": str(z["token"])}
    except (OSError, KeyError, ValueError) as e:
        raise ValueError(f"{path}: not a prediction written by eval.py --save_pred ({e})") from None
