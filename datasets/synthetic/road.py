"""The road of a synthetic scene: a straight line or a circular arc, with road-aligned coordinates (s, d).

``s`` is the arc length along the centre line, ``d`` the signed lateral offset (positive to the left of the
driving direction). The cross-section is the same everywhere: road (driveable, z = 0) for |d| < half_width,
then a sidewalk raised by ``KERB_HEIGHT`` on each side, then terrain at the sidewalk height, with a few
rectangular ``other_flat`` patches (gravel lots) in the terrain.
"""
import numpy as np

KERB_HEIGHT = 0.15
DRIVEABLE, OTHER_FLAT, SIDEWALK, TERRAIN = 11, 12, 13, 14


class Road:
    """Centre line through ``p0`` with heading ``psi0`` (rad) and signed curvature ``kappa`` (1/m, left > 0)."""

    def __init__(self, p0, psi0, kappa, half_width, sidewalk_width, flat_patches=()):
        self.p0 = np.asarray(p0, dtype=np.float64)
        self.psi0 = float(psi0)
        self.kappa = float(kappa) if abs(kappa) > 1e-7 else 0.0
        self.half_width = float(half_width)
        self.sidewalk_width = float(sidewalk_width)
        self.flat_patches = np.asarray(flat_patches, dtype=np.float64).reshape(-1, 4)  # s0, s1, d0, d1

    def _centre(self):
        """Centre of the arc (only when curved)."""
        return self.p0 + np.array([-np.sin(self.psi0), np.cos(self.psi0)]) / self.kappa

    def frame(self, s):
        """Centre-line point (..., 2) and heading (...) at arc length ``s``."""
        s = np.asarray(s, dtype=np.float64)
        if self.kappa == 0.0:
            t = np.array([np.cos(self.psi0), np.sin(self.psi0)])
            return self.p0 + s[..., None] * t, np.full(s.shape, self.psi0)
        phi = self.psi0 + self.kappa * s
        pts = self._centre() + np.stack([np.sin(phi), -np.cos(phi)], -1) / self.kappa
        return pts, phi

    def point(self, s, d):
        """Global x, y (..., 2) of road coordinates (s, d)."""
        pts, phi = self.frame(s)
        return pts + np.asarray(d)[..., None] * np.stack([-np.sin(phi), np.cos(phi)], -1)

    def to_sd(self, x, y):
        """Road coordinates (s, d) of global points x, y (arrays of one shape)."""
        if self.kappa == 0.0:
            dx, dy = x - self.p0[0], y - self.p0[1]
            c, s_ = np.cos(self.psi0), np.sin(self.psi0)
            return dx * c + dy * s_, -dx * s_ + dy * c
        c = self._centre()
        vx, vy = x - c[0], y - c[1]
        r = np.hypot(vx, vy)
        sg = np.sign(self.kappa)
        phi = np.arctan2(sg * vx, -sg * vy)
        dphi = (phi - self.psi0 + np.pi) % (2 * np.pi) - np.pi
        return dphi / self.kappa, 1.0 / self.kappa - sg * r

    def ground(self, x, y):
        """Ground class (uint8) and surface height (float) at global x, y."""
        s, d = self.to_sd(x, y)
        ad = np.abs(d)
        cls = np.full(ad.shape, TERRAIN, dtype=np.uint8)
        for s0, s1, d0, d1 in self.flat_patches:
            cls[(s >= s0) & (s < s1) & (d >= d0) & (d < d1)] = OTHER_FLAT
        cls[ad < self.half_width + self.sidewalk_width] = SIDEWALK
        cls[ad < self.half_width] = DRIVEABLE
        return cls, np.where(ad < self.half_width, 0.0, KERB_HEIGHT)
