"""Rays through a regular voxel grid, one voxel a step (Amanatides & Woo), vectorised over the rays.

The one traversal behind RayIoU (``utils.occ_metrics.first_hits``) and the Occ3D visibility masks of the synthetic
set and of the LiDAR-derived labels (``datasets.synthetic.visibility.observed``). ``VoxelWalk`` holds where each ray
is; what a voxel means (a hit, the end of the beam, the edge of the grid) is the caller's.
"""
import numpy as np

TIES = ("xyz", "zyx")


class VoxelWalk:
    """R rays in a grid of voxels of ``size`` (3,) from ``lo`` (3,), each in one voxel at a time.

    origins (R, 3) or (3,) inside the grid, dirs (R, 3) (distances are in units of |dir|); ``strides`` (3,): the
    voxel's flat index is ``(ijk + offset) @ strides`` (``offset`` 1: a grid padded by one voxel). ``tie``: the axis
    that steps first where a ray leaves its voxel through an edge or a corner: ``xyz`` (x, then y, then z) or
    ``zyx`` (z, then y, then x: SparseOcc's CUDA traversal, which RayIoU follows). ``rays``: the rays' numbers
    (default 0 .. R-1), kept through ``keep``.

    State, per ray (axis rows (3, R) keep every step a contiguous 1-D operation): ``flat`` voxel index,
    ``t_next`` distance at which the ray crosses the next boundary along each axis, ``t_delta`` distance across one
    voxel along each axis, ``step`` the change of the flat index along each axis, ``ray`` the rays' numbers.
    """

    def __init__(self, origins, dirs, lo, size, strides, tie="xyz", offset=0, rays=None):
        if tie not in TIES:
            raise ValueError(f"tie must be one of {TIES}, got {tie!r}")
        dirs = np.asarray(dirs, np.float64)
        o = np.broadcast_to(np.asarray(origins, np.float64), dirs.shape)
        lo, size, strides = np.asarray(lo, np.float64), np.asarray(size, np.float64), np.asarray(strides)
        self.ijk = np.floor((o - lo) / size).astype(np.int64)  # (R, 3) the first voxel of each ray
        with np.errstate(divide="ignore", invalid="ignore"):
            self.t_delta = np.where(dirs != 0, size / np.abs(dirs), np.inf).T.copy()
            self.t_next = np.where(dirs != 0, ((self.ijk + (dirs > 0)) * size + lo - o) / dirs, np.inf).T.copy()
        self.step = np.where(dirs > 0, strides, -strides).T.copy()
        self.flat = (self.ijk + offset) @ strides
        self.ray = np.arange(len(dirs)) if rays is None else np.asarray(rays)
        self.tie = tie

    def exit_distance(self):
        """(R,) distance at which each ray leaves its current voxel."""
        tx, ty, tz = self.t_next
        return np.minimum(np.minimum(tx, ty), tz)

    def axis(self):
        """(R,) the axis each ray crosses next (ties broken by ``tie``)."""
        tx, ty, tz = self.t_next
        if self.tie == "zyx":
            return np.where(tx < ty, np.where(tx < tz, 0, 2), np.where(ty < tz, 1, 2))
        t = self.exit_distance()
        return np.where(tx == t, 0, np.where(ty == t, 1, 2))

    def advance(self, axis):
        """Every ray into its next voxel along ``axis`` (R,)."""
        cross = np.arange(3)[:, None] == axis
        self.flat = self.flat + (self.step * cross).sum(0)
        self.t_next = np.where(cross, self.t_next + self.t_delta, self.t_next)

    def keep(self, rays, *arrays):
        """Keep only the rays where ``rays`` (R,) bool is set; ``arrays`` (the caller's per-ray state, last axis
        R) are cut the same way and returned."""
        self.flat, self.ray = self.flat[rays], self.ray[rays]
        self.t_next, self.t_delta, self.step = self.t_next[:, rays], self.t_delta[:, rays], self.step[:, rays]
        return tuple(a[..., rays] for a in arrays)
