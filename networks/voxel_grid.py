"""Where the voxels of the predicted volume sit in the ego frame (metres), uniform or contracted.

``VoxelGrid`` maps metric ego points (..., 3) to grid_sample coordinates s in [-1, 1], x y z order, and back.
s follows align_corners=False: voxel i of n has its centre at s = (2i + 1)/n - 1. Per axis,
u = (x - centre) / half_width of ``real_size`` (|u| <= 1 inside the box). Three layouts:

* uniform (``contracted`` off): s = u.
* ``contract_mode xy`` (this project's): x and y are contracted, z never. The box keeps a uniform share ``ratio``
  of the voxels of each of these axes and the rest cover the distance from the box edge out to ``outer`` metres
  from the box centre, with voxel size growing like the inverse-distance contraction of mip-NeRF 360:
      s = ratio * u                                                               for |u| <= 1,
      s = sign(u) (ratio + (1 - ratio) (1 - 1/|u|) / (1 - half_width/outer))         for |u| > 1,
  so |x - centre| = outer lands on s = +-1; points beyond are outside the volume.
* ``contract_mode xyz`` (the authors', their utils/vox.py world2contracted): all three axes, infinite range,
  with t = ratio / (1 - ratio):
      c = ratio * u                                                               for |u| <= 1,
      c = sign(u) (1 - (1 - ratio) / (t (|u| - 1) + 1))                            for |u| > 1,
  continuous with its slope at the box edge, c = +-1 only at infinity. The authors index c with
  align_corners=True (voxel i at c = 2i/(n-1) - 1), so their first and last voxels would sit at infinity; they
  move them inwards to index 0.5 and n - 1.5 (x, y), 0.05 and n - 1.05 (z) (``AUTHORS_EDGE``). Here the same
  voxel positions are used (so their weights see the same scene), written in our convention:
  s = ((c + 1)(n - 1) + 1)/n - 1. With ratio 2/3 and 300 x 300 x 24 voxels over [-40, 40]^2 x [-1, 5.4] the
  box holds 200 x 200 x 16 voxels (the Occ3D count; 0.401 m apart in x, y and 0.417 m in z, their spacing
  3 half_width / (n - 1)) and the rest reaches to infinity.
"""
import torch

CONTRACT_MODES = ("xy", "xyz")
AUTHORS_EDGE = (0.5, 0.5, 0.05)  # index offset of the outermost voxels in the xyz layout, per axis x, y, z


class VoxelGrid:
    """Maps metric ego points to normalised grid coordinates in [-1, 1] and back (see the module docstring)."""

    def __init__(self, shape, real_size, contracted=False, contract_outer=100.0, contract_ratio=0.8,
                 contract_mode="xy"):
        self.shape = tuple(int(n) for n in shape)
        lo = torch.tensor(real_size[0::2], dtype=torch.float32)
        hi = torch.tensor(real_size[1::2], dtype=torch.float32)
        self.centre, self.half = (lo + hi) / 2, (hi - lo) / 2
        self.contracted = contracted
        self.mode = contract_mode if contracted else None
        self.ratio = contract_ratio
        self.outer = contract_outer
        if contracted and contract_mode not in CONTRACT_MODES:
            raise ValueError(f"--contract_mode must be one of {CONTRACT_MODES}, got {contract_mode!r}")
        if contracted and not 0 < contract_ratio < 1:
            raise ValueError(f"contracted grid needs 0 < --contract_ratio < 1, got {contract_ratio}")
        if self.mode == "xy" and not contract_outer > self.half[:2].max():
            raise ValueError("--contract_mode xy needs --contract_outer beyond real_size")
        if self.mode == "xyz" and min(self.shape) < 3:
            raise ValueError(f"--contract_mode xyz needs at least 3 voxels per axis, got grid_size {self.shape}")

    @classmethod
    def from_opt(cls, opt):
        return cls(opt.grid_size, opt.real_size, opt.contracted, opt.contract_outer, opt.contract_ratio,
                   opt.contract_mode)

    @property
    def axes(self):
        """Indices of the contracted axes."""
        return {None: (), "xy": (0, 1), "xyz": (0, 1, 2)}[self.mode]

    # ---- this project's x / y contraction to a finite range
    def _contract_finite(self, u, half):
        a = u.abs().clamp(min=1.0)
        outer = (self.ratio + (1 - self.ratio) * (1 - 1 / a) / (1 - half / self.outer)) * u.sign()
        return torch.where(u.abs() <= 1, self.ratio * u, outer)

    def _expand_finite(self, s, half):
        t = ((s.abs() - self.ratio) / (1 - self.ratio)).clamp(0, 1 - 1e-6) * (1 - half / self.outer)
        return torch.where(s.abs() <= self.ratio, s / self.ratio, s.sign() / (1 - t))

    # ---- the authors' contraction of every axis to an infinite range, in our index convention
    def _contract_infinite(self, u, n):
        """u -> s: their world2contracted c in (-1, 1) on one axis of n voxels, then c's voxel index in our s."""
        t = self.ratio / (1 - self.ratio)
        a = u.abs().clamp(min=1.0)
        c = torch.where(u.abs() <= 1, self.ratio * u, u.sign() * (1 - (1 - self.ratio) / (t * (a - 1) + 1)))
        return ((c + 1) * (n - 1) + 1) / n - 1

    def _expand_infinite(self, s, n):
        t = self.ratio / (1 - self.ratio)
        c = ((s + 1) * n - 1) / (n - 1) - 1
        a = c.abs().clamp(self.ratio, 1 - 1e-7)
        return torch.where(c.abs() <= self.ratio, c / self.ratio, c.sign() * (1 + ((1 - self.ratio) / (1 - a) - 1) / t))

    def _per_axis(self, x, finite, infinite):
        """Apply the contraction (or its inverse) of the active mode to each contracted axis of x (..., 3)."""
        out = []
        for i in range(3):
            v = x[..., i]
            if i in self.axes:
                v = finite(v, self.half[i].item()) if self.mode == "xy" else infinite(v, self.shape[i])
            out.append(v)
        return torch.stack(out, -1)

    def normalise(self, pts):
        """pts (..., 3) metric ego -> (..., 3) grid coordinates, x y z order, inside the volume when in [-1, 1]."""
        u = (pts - self.centre.to(pts)) / self.half.to(pts)
        return self._per_axis(u, self._contract_finite, self._contract_infinite)

    def denormalise(self, s):
        """Inverse of ``normalise`` for s (..., 3) in [-1, 1]."""
        u = self._per_axis(s, self._expand_finite, self._expand_infinite)
        return u * self.half.to(s) + self.centre.to(s)

    def index_coords(self, device=None):
        """Per axis, the (fractional) voxel index at which each voxel's centre is placed, a list of 3 tensors:
        i itself, except in the xyz layout where the outermost voxels move inwards by ``AUTHORS_EDGE``."""
        idx = [torch.arange(n, device=device, dtype=torch.float32) for n in self.shape]
        if self.mode == "xyz":
            idx = [i.clamp(e, n - 1 - e) for i, n, e in zip(idx, self.shape, AUTHORS_EDGE)]
        return idx

    def centres(self, device=None):
        """Metric ego coordinates of the voxel centres, (X, Y, Z, 3)."""
        axes = [(2 * i + 1) / n - 1 for i, n in zip(self.index_coords(device), self.shape)]
        return self.denormalise(torch.stack(torch.meshgrid(*axes, indexing="ij"), -1))
