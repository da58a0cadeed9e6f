"""Checks of what the datasets read, at the edge: calibration and poses (finite, positive focal lengths, rotations
that are rotations), Occ3D label volumes (shape, dtype, class ids) and split files (not empty).

A bad value stops the run at once with one line naming the file, the record and the fix (``BadData``), instead of
a singular matrix, a NaN loss or a segmentation fault in the backward pass, or metrics over misaligned voxels.
"""
import numpy as np

from utils.constants import FREE_ID, OCC3D_SHAPE
from utils.errors import BadData

UNIT_TOLERANCE = 1e-3  # |norm - 1| of a rotation quaternion (the released tables are unit to 1e-15)
OCC_KEYS = ("semantics", "mask_camera", "mask_lidar")


def _numbers(values):
    """``values`` as a float64 array, or None when they are not numbers."""
    try:
        return np.asarray(values, dtype=np.float64)
    except (ValueError, TypeError):
        return None


def check_intrinsics(K, where):
    """A 3x3 pinhole matrix with finite entries, focal lengths > 0 and last row (0, 0, 1)."""
    arr = _numbers(K)
    if arr is None or arr.shape != (3, 3):
        raise BadData(f"{where}: camera intrinsics {K!r} are not a 3x3 matrix of numbers: fix the calibration table")
    K = arr
    if not np.isfinite(K).all():
        raise BadData(f"{where}: camera intrinsics hold non-finite values ({K.tolist()}; fx, fy > 0 and cx, cy "
                      "finite, in pixels of the original image): fix the calibration table")
    if not (K[0, 0] > 0 and K[1, 1] > 0):
        raise BadData(f"{where}: focal length fx = {K[0, 0]:g}, fy = {K[1, 1]:g}: both must be > 0 (pixels of the "
                      "original image); fix the calibration table")
    if not np.allclose(K[2], [0, 0, 1]):
        raise BadData(f"{where}: camera intrinsics last row {K[2].tolist()}, expected [0, 0, 1]: fix the "
                      "calibration table")


def check_translation(t, where):
    arr = _numbers(t)
    if arr is None or arr.shape != (3,) or not np.isfinite(arr).all():
        raise BadData(f"{where}: translation {t!r} is not 3 finite numbers (metres): fix the table")


def check_quaternion(q, where):
    """A rotation (w, x, y, z): finite and of unit norm."""
    arr = _numbers(q)
    if arr is None or arr.shape != (4,) or not np.isfinite(arr).all():
        raise BadData(f"{where}: rotation {q!r} is not 4 finite numbers (quaternion w x y z): fix the table")
    norm = float(np.linalg.norm(arr))
    if abs(norm - 1) > UNIT_TOLERANCE:
        raise BadData(f"{where}: rotation {q!r} has norm {norm:.6g}, not a unit quaternion (w x y z): fix the table")


def check_pose(translation, rotation, where):
    check_translation(translation, where)
    check_quaternion(rotation, where)


def check_occ_labels(arrays, path):
    """Occ3D ``labels.npz`` arrays (semantics, mask_camera, mask_lidar): (200, 200, 16) = (X, Y, Z), integer
    class ids 0..17 (17 free), masks 0 / 1."""
    for key, arr in zip(OCC_KEYS, arrays):
        if arr.shape != OCC3D_SHAPE:
            hint = " (transposed? Occ3D stores X, Y, Z)" if sorted(arr.shape) == sorted(OCC3D_SHAPE) else ""
            raise BadData(f"Occ3D labels {path}: '{key}' has shape {arr.shape}, expected {OCC3D_SHAPE}{hint}: "
                          "export the labels again in Occ3D's layout")
        if arr.dtype.kind not in "uib":
            raise BadData(f"Occ3D labels {path}: '{key}' is {arr.dtype}, expected uint8: export the labels again")
        top = FREE_ID if key == "semantics" else 1
        if arr.size and (int(arr.min()) < 0 or int(arr.max()) > top):
            raise BadData(f"Occ3D labels {path}: '{key}' holds values {int(arr.min())}..{int(arr.max())}, expected "
                          f"0..{top}: export the labels again")


def check_split(tokens, path):
    if not tokens:
        raise BadData(f"split file {path} lists no sample token (only blank or # comment lines): write one token "
                      "per line (tools/data/make_split.py), or leave the split option unset for every sample")
    return tokens
