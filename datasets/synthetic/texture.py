"""Procedural appearance: textures fixed in world / object coordinates, Lambertian sun + ambient, haze, sky.

Textures are functions of the hit point (value noise in global coordinates, stripes / bricks / windows / lane
markings in primitive or road coordinates), so a surface looks the same from every camera and frame. Patterns
are box-filtered over the pixel footprint (stripes exactly, noise octaves faded out) to avoid aliasing.
"""
import numpy as np

from datasets.synthetic import scene as S

SKY_HORIZON, SKY_ZENITH = np.array([0.78, 0.84, 0.9]), np.array([0.32, 0.52, 0.85])
HAZE_DIST = 250.0


def _hash(ix, iy, iz, seed):
    """Pseudo-random values in [0, 1) of integer lattice points."""
    h = (ix.astype(np.uint32) * np.uint32(73856093)) ^ (iy.astype(np.uint32) * np.uint32(19349663))
    h ^= iz.astype(np.uint32) * np.uint32(83492791) ^ np.uint32(seed * 2654435761 % 2 ** 32)
    h ^= h >> np.uint32(13)
    h *= np.uint32(1274126177)
    h ^= h >> np.uint32(16)
    return h.astype(np.float64) / 2.0 ** 32


def value_noise(p, scale, seed=0):
    """Smooth 3D value noise in [0, 1] of points p (N, 3) with feature size ``scale`` metres."""
    q = p / scale
    i = np.floor(q).astype(np.int64)
    f = q - i
    u = f * f * (3 - 2 * f)
    wx, wy, wz = ((1 - u[:, k], u[:, k]) for k in range(3))  # trilinear weights of the two corners per axis
    out = 0.0
    for dx in (0, 1):
        for dy in (0, 1):
            for dz in (0, 1):
                w = wx[dx] * wy[dy] * wz[dz]
                out = out + w * _hash(i[:, 0] + dx, i[:, 1] + dy, i[:, 2] + dz, seed)
    return out


def fbm(p, scales, fp, seed=0):
    """Sum of noise octaves in [-1, 1]; an octave fades out where the pixel footprint ``fp`` nears its scale."""
    out, norm = 0.0, 0.0
    for k, sc in enumerate(scales):
        amp = np.clip(sc / (2 * fp) - 0.5, 0, 1) / (k + 1)
        out = out + amp * (2 * value_noise(p, sc, seed + k) - 1)
        norm += 1.0 / (k + 1)
    return out / norm


def stripe(u, period, duty, fp):
    """Box-filtered square wave: fraction of [u - fp/2, u + fp/2] where frac(u / period) < duty."""
    def integral(x):
        return np.floor(x / period) * duty * period + np.minimum(np.mod(x, period), duty * period)
    fp = np.maximum(fp, 1e-3)
    return (integral(u + fp / 2) - integral(u - fp / 2)) / fp


def band(u, lo, hi, fp):
    """Box-filtered indicator of lo <= u < hi over the footprint ``fp``."""
    fp = np.maximum(fp, 1e-3)
    return (np.clip(u + fp / 2, lo, hi) - np.clip(u - fp / 2, lo, hi)) / fp


def sky(d):
    """Sky colour of view directions d (N, 3): a vertical gradient with soft clouds fixed at infinity."""
    e = np.clip(d[:, 2], 0, 1)[:, None]
    col = SKY_HORIZON + (SKY_ZENITH - SKY_HORIZON) * np.sqrt(e)
    cloud = np.clip(2.2 * value_noise(d * 4.0, 1.0, 99) - 1.2, 0, 1)[:, None] * (e > 0.02)
    return col * (1 - 0.6 * cloud) + 0.95 * 0.6 * cloud


def _ground_albedo(mat, p, loc, fp, road):
    """Albedo of the road (asphalt + lane markings), sidewalk tiles, grass and gravel."""
    col = np.zeros((len(p), 3))
    s, d = loc[:, 0], loc[:, 1]
    n = fbm(p, (3.0, 0.8, 0.25, 0.08), fp)[:, None]
    m = mat == S.M_ROAD
    hw = road.half_width
    paint = np.maximum(band(d[m], -0.075, 0.075, fp[m]) * stripe(s[m], 6.0, 0.5, fp[m]),  # centre dashes
                       band(np.abs(d[m]), hw - 2.56, hw - 2.44, fp[m]))  # parking strip line
    col[m] = (0.32 + 0.07 * n[m]) * (1 - paint[:, None]) + 0.88 * paint[:, None]
    m = mat == S.M_SIDEWALK
    joints = 1 - (1 - stripe(s[m] + 0.02, 0.8, 0.05, fp[m])) * (1 - stripe(d[m] + 0.02, 0.8, 0.05, fp[m]))
    col[m] = (np.array([0.62, 0.6, 0.57]) + 0.08 * n[m]) * (1 - 0.35 * joints[:, None])
    m = mat == S.M_TERRAIN
    patch = value_noise(p[m], 5.0, 7)[:, None]
    col[m] = (np.array([0.28, 0.45, 0.16]) * (1 - patch) + np.array([0.45, 0.42, 0.25]) * patch) * (1 + 0.3 * n[m])
    m = mat == S.M_GRAVEL
    col[m] = np.array([0.52, 0.47, 0.4]) * (1 + 0.35 * n[m])
    return col


def _facade(loc, half, normal_local, fp):
    """Window mask (0..1) on the vertical faces of a building box, in its local coordinates."""
    u = np.where(np.abs(normal_local[:, 0]) > 0.5, loc[:, 1], loc[:, 0])
    z = loc[:, 2] + half[:, 2]
    win = stripe(u + 0.7, 3.0, 0.5, fp) * stripe(z - 1.0, 3.0, 0.55, fp) * (z > 1.0) * (z < 2 * half[:, 2] - 0.6)
    return win * (np.abs(normal_local[:, 2]) < 0.5)


def _object_albedo(mat, hit, world, fp):
    """Albedo of object surfaces from their base colour and a material pattern in primitive coordinates."""
    idx = hit["prim"]
    base, half, loc, p = world.color[idx], world.half[idx], hit["local"], hit["point"]
    c, s = np.cos(world.yaw[idx]), np.sin(world.yaw[idx])
    nx = c * hit["normal"][:, 0] + s * hit["normal"][:, 1]
    nl = np.stack([nx, -s * hit["normal"][:, 0] + c * hit["normal"][:, 1], hit["normal"][:, 2]], -1)
    n = fbm(p, (1.5, 0.4, 0.1), fp, 3)[:, None]
    col = base * (1 + 0.12 * n)
    m = (mat == S.M_BRICK) | (mat == S.M_PLASTER)
    if m.any():
        u = np.where(np.abs(nl[m, 0]) > 0.5, loc[m, 1], loc[m, 0])
        row = np.floor((loc[m, 2] + half[m, 2]) / 0.3)
        mortar = 1 - (1 - stripe(loc[m, 2] + half[m, 2], 0.3, 0.12, fp[m])) * \
            (1 - stripe(u + 0.3 * (row % 2), 0.6, 0.06, fp[m]))
        brick = (mat[m] == S.M_BRICK)[:, None]
        wall = col[m] * (1 + np.where(brick, 0.25, 0.1) * n[m]) * (1 - np.where(brick, 0.35, 0.0) * mortar[:, None])
        win = _facade(loc[m], half[m], nl[m], fp[m])[:, None]
        roof = (np.abs(nl[m, 2]) > 0.5)[:, None]
        col[m] = np.where(roof, 0.35 + 0.05 * n[m], wall * (1 - win) + np.array([0.14, 0.19, 0.27]) * win)
    m = mat == S.M_GLASS  # car cabin / truck cab: dark windows on the sides, body colour on the roof
    col[m] = np.where(np.abs(nl[m, 2:3]) > 0.5, col[m], np.array([0.1, 0.13, 0.18]) + 0.05 * n[m])
    m = mat == S.M_CAR  # dark bumpers / wheels band at the bottom
    col[m] *= (1 - 0.75 * band(loc[m, 2] + half[m, 2], -1.0, 0.18, fp[m]))[:, None]
    m = mat == S.M_FOLIAGE
    col[m] *= (1 + 0.45 * fbm(p[m], (0.6, 0.25, 0.1), fp[m], 5))[:, None]
    m = mat == S.M_BARK
    col[m] *= (1 + 0.4 * fbm(p[m] * np.array([4.0, 4.0, 0.5]), (0.5, 0.2), fp[m], 6))[:, None]
    m = mat == S.M_BARRIER
    col[m] = np.where(stripe(loc[m, 0] + loc[m, 2], 0.5, 0.5, fp[m])[:, None] > 0.5, col[m], 0.92)
    m = mat == S.M_CONE
    col[m] = np.where(((loc[m, 2] > 0.3) & (loc[m, 2] < 0.42))[:, None], 0.95, col[m])
    m = (mat == S.M_METAL) & (world.cls[idx] == 3)  # bus windows
    col[m] *= (1 - 0.8 * band(loc[m, 2], 0.1, 1.0, fp[m]))[:, None]
    m = mat == S.M_PERSON  # trousers darker than the coat
    col[m] *= np.where((loc[m, 2] < -0.05)[:, None] & (half[m, 2:3] > 0.5), 0.45, 1.0)
    return col


def shade(hit, d, world, pix_angle):
    """RGB in [0, 1] of ray hits ``hit`` (from ``raycast.cast``, plus ``prim``) for view directions d."""
    t = hit["t"]
    ok = np.isfinite(t)
    rgb = sky(d)
    if not ok.any():
        return rgb
    h = {k: v[ok] for k, v in hit.items() if isinstance(v, np.ndarray)}
    cos = np.abs((h["normal"] * d[ok]).sum(1))
    fp = h["t"] * pix_angle / np.maximum(cos, 0.15)
    mat = h["material"]
    ground = h["inst"] < 0
    col = np.zeros((ok.sum(), 3))
    col[ground] = _ground_albedo(mat[ground], h["point"][ground], h["local"][ground], fp[ground], world.road)
    if (~ground).any():
        col[~ground] = _object_albedo(mat[~ground], {k: v[~ground] for k, v in h.items()}, world, fp[~ground])
    light = 0.45 + 0.7 * np.clip(h["normal"] @ world.sun, 0, 1)
    haze = (1 - np.exp(-h["t"] / HAZE_DIST))[:, None]
    rgb[ok] = np.clip(col * light[:, None], 0, 1) * (1 - haze) + SKY_HORIZON * haze
    return rgb
