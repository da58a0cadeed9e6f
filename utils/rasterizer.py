"""Gaussian splatting rasteriser: one function, two backends with the same conventions.

``rasterize`` renders N 3D Gaussians into C pinhole cameras in one call and returns accumulated depth, alpha and
N-D features. ``backend="gsplat"`` calls ``gsplat.rasterization`` (CUDA); ``backend="torch"`` is a pure PyTorch
reference (any device, autograd) that follows the same rules, read from gsplat 1.5.3's kernels:

  * projection: a Gaussian is dropped for a camera when its camera z is outside [near, far]; 3D covariance
    R(q) S S^T R(q)^T (quaternion wxyz, normalised); EWA: cov2d = J W cov W^T J^T with the perspective Jacobian J
    evaluated at the mean, whose x/z and y/z are clamped to 1.3x the image's half field of view; then
    ``EPS2D`` = 0.3 px^2 is added to the diagonal (low-pass). Dropped too: det(cov2d) <= 0, opacity < 1/255,
    and Gaussians whose bounding box misses the image.
  * extent: opacity-aware, k = min(3.33, sqrt(2 ln(255 o))) standard deviations per image axis.
  * pixel: alpha = min(0.999, o exp(-0.5 d^T cov2d^-1 d)), d = mean2d - pixel centre; skipped if < 1/255.
  * compositing: front to back by camera z of the mean; T_i = prod_{j<i} (1 - alpha_j); the pixel stops at the
    first Gaussian whose T_i (1 - alpha_i) <= 1e-4 (that Gaussian is not drawn); w_i = alpha_i T_i.
  * outputs: depth = sum w_i z_i, alpha = sum w_i (= 1 - T_final), features = sum w_i f_i, no background.

Pixel centres: this project's convention (``utils/geometry.py``, OpenCV): pixel (row v, column u) has its centre
at the integer coordinates (u, v) of ``Ks``; a point that K projects to (3, 5) peaks at column 3, row 5. gsplat
places centres at +0.5, so both backends add 0.5 to cx and cy of ``Ks`` before applying gsplat's rules.

Torch backend: packed projection of the visible (camera, Gaussian) pairs sorted front to back; a list of
pixel-Gaussian pairs (rows of each box, the part of each row inside the alpha >= 1/255 ellipse, built with
repeat_interleave in chunks of ``max_pairs``); stable sort by pixel; transmittance as a segmented exclusive
cumulative sum of log(1 - alpha) in float64; one scatter-add of w * (features, z, 1) with a hand-written backward.
Memory grows with the number of pairs (about 100 bytes each); 100k voxel Gaussians at 6 x 90x160 make ~3M.
gsplat backend: float32 CUDA tensors; Gaussians are not differentiable w.r.t. Ks.
"""
import math

import torch

from utils.raster_backend import add_args, gsplat_available, resolve_backend  # noqa: F401 (re-exported)

EPS2D = 0.3              # px^2 added to the diagonal of every projected covariance
ALPHA_MIN = 1.0 / 255.0  # weaker pixel alphas (and opacities) are skipped
ALPHA_MAX = 0.999        # alpha clamp (gsplat 1.5.3 kernels)
T_MIN = 1e-4             # a pixel stops before the Gaussian that would bring its transmittance to <= T_MIN
EXTEND_MAX = 3.33        # bounding box half-size in standard deviations (before the opacity-aware bound)
FOV_CLIP = 1.3           # Jacobian evaluated at most this many half fields of view off the optical axis


def rasterize(means, quats, scales, opacities, features, viewmats, Ks, width, height, *,
              near=0.1, far=1e10, backend="auto", max_pairs=1 << 22, zsq=None, packed=True, tile_size=16):
    """Render N Gaussians into C cameras.

    means (N,3) world frame; quats (N,4) wxyz (not necessarily normalised); scales (N,3) standard deviations;
    opacities (N,) in [0,1]; features (N,D), per camera (C,N,D), or None; viewmats (C,4,4) world -> camera (OpenCV);
    Ks (C,3,3) pixel intrinsics (OpenCV pixel centres, see the module docstring); width, height in pixels;
    near, far: camera-z range of the Gaussian centres that are drawn; max_pairs: torch backend, bounds the
    pixel-Gaussian pairs handled at once (memory); packed, tile_size: gsplat's options (gsplat backend; the
    same render).
    zsq: also render ``zsq`` (C,1,H,W) = sum_i w_i z_i^2 (z_i the camera depth of Gaussian i's mean, no gradient
    through z), by ``per_camera``: a copy of the features per camera with z^2 appended (C,N,D+1), or ``moments``:
    9 channels shared by the cameras, the mean p and the products p p^T, combined per camera after the render as
    z^2 = n^T (p p^T) n + 2 t n.p + t^2 (z = n.p + t, n and t the view matrix's third row): the same value to
    float32 rounding, without the per-camera copy (``depth_moments``). z is computed in float32 under autocast too.
    Returns dict(depth (C,1,H,W) sum_i w_i z_i, depth_exp (C,1,H,W) depth / max(alpha, 1e-10),
                 alpha (C,1,H,W) sum_i w_i, features (C,D,H,W) sum_i w_i f_i, D = 0 when features is None
                 [, zsq (C,1,H,W)]).
    Differentiable w.r.t. means, quats, scales, opacities and features (not Ks or viewmats in gsplat).
    """
    N, C = means.shape[0], viewmats.shape[0]
    assert means.shape == (N, 3) and quats.shape == (N, 4) and scales.shape == (N, 3), (means.shape, quats.shape,
                                                                                       scales.shape)
    assert opacities.shape == (N,), opacities.shape
    assert features is None or (features.dim() == 2 and features.shape[0] == N) or (
        features.dim() == 3 and features.shape[:2] == (C, N)), features.shape
    assert viewmats.shape == (C, 4, 4) and Ks.shape == (C, 3, 3), (viewmats.shape, Ks.shape)
    backend = resolve_backend(backend, means.device)
    if zsq is not None:
        return _rasterize_with_zsq(means, quats, scales, opacities, features, viewmats, Ks, width, height, zsq,
                                   near=near, far=far, backend=backend, max_pairs=max_pairs, packed=packed,
                                   tile_size=tile_size)
    D = 0 if features is None else features.shape[-1]
    Ks = Ks.clone()
    Ks[:, 0, 2] += 0.5
    Ks[:, 1, 2] += 0.5
    if N == 0 or C == 0:  # zeros that still belong to the autograd graph of the inputs
        img = means.new_zeros(C, D + 2, height, width) + 0.0 * sum(
            x.sum() for x in (means, quats, scales, opacities, features) if x is not None)
    else:
        # Rasterise in float32 (or float64) whatever autocast says: depth sorting and transmittance need it.
        args = [x if x is None or x.dtype == torch.float64 else x.float()
                for x in (means, quats, scales, opacities, features, viewmats, Ks)]
        with torch.autocast(means.device.type, enabled=False):
            if backend == "gsplat":
                img = _rasterize_gsplat(*args, width, height, near, far, packed, tile_size)
            else:
                img = _rasterize_torch(*args, width, height, near, far, max_pairs)
    depth, alpha = img[:, D:D + 1], img[:, D + 1:D + 2]
    return {"depth": depth, "depth_exp": depth / alpha.clamp(min=1e-10), "alpha": alpha, "features": img[:, :D]}


# channel counts gsplat 1.5.3's rasterize_to_pixels has kernels for (features + the depth of "RGB+D"); any other count
# it pads with zeros by one more concatenation of all the (camera, Gaussian) pairs' colours
GSPLAT_CHANNELS = (1, 2, 3, 4, 5, 8, 9, 16, 17, 32, 33, 64, 65, 128, 129, 256, 257, 512, 513)


def gsplat_padding(d):
    """Zero feature channels to append to d features so that gsplat renders them (with its depth channel) without
    padding them itself: the zeros are then written by a concatenation that is made anyway."""
    return min(c for c in GSPLAT_CHANNELS if c >= d + 1) - (d + 1) if d + 1 <= GSPLAT_CHANNELS[-1] else 0


def _padding_for(backend, d):
    """gsplat_padding(d) for the gsplat backend (zeros in our concatenation instead of gsplat's), else 0."""
    return gsplat_padding(d) if backend == "gsplat" else 0


def depth_moments(means):
    """(N, 9): x, y, z, xx, xy, xz, yy, yz, zz of the means (N, 3) (float32, float64 kept), no gradient: the
    shared channels of zsq moments."""
    p = means.detach()
    p = p if p.dtype == torch.float64 else p.float()
    x, y, z = p.unbind(-1)
    return torch.stack([x, y, z, x * x, x * y, x * z, y * y, y * z, z * z], -1)


def zsq_from_moments(moments, alpha, viewmats):
    """sum_i w_i z_i^2 (C,1,H,W) from the rendered moments (C,9,H,W) (sum_i w_i of depth_moments) and alpha
    (C,1,H,W): z = n.p + t per camera, n, t = viewmats[:, 2, :3], viewmats[:, 2, 3]."""
    n, t = viewmats[:, 2, :3].to(moments.dtype), viewmats[:, 2, 3].to(moments.dtype)
    nx, ny, nz = n.unbind(-1)
    coef = torch.stack([2 * t * nx, 2 * t * ny, 2 * t * nz, nx * nx, 2 * nx * ny, 2 * nx * nz, ny * ny,
                        2 * ny * nz, nz * nz, t * t], -1)  # (C, 10) over (moments, alpha)
    return torch.einsum("ck,ckhw->chw", coef, torch.cat([moments, alpha], 1))[:, None]


def _rasterize_with_zsq(means, quats, scales, opacities, features, viewmats, Ks, width, height, mode, **kw):
    """rasterize(..., zsq=mode): the features get z^2 (per camera) or the 9 moments (shared); see rasterize."""
    if mode not in ("per_camera", "moments"):
        raise ValueError(f"zsq must be None, per_camera or moments, got {mode!r}")
    C, N = viewmats.shape[0], means.shape[0]
    feats = features if features is not None else means.new_zeros(N, 0)
    if feats.dtype != torch.float64:
        feats = feats.float()  # what the backends render anyway; z^2 and the moments must not be rounded to bf16
    with torch.autocast(means.device.type, enabled=False):
        if mode == "per_camera":
            z = (means @ viewmats[:, 2, :3].t() + viewmats[:, 2, 3]).detach().t().to(feats.dtype)  # (C, N)
            if feats.dim() == 2:
                feats = feats.expand(C, -1, -1)
            extra = (z * z)[..., None]
        else:
            if feats.dim() == 3:
                raise ValueError("zsq moments needs features shared by the cameras, (N, D)")
            extra = depth_moments(means)
        d = feats.shape[-1] + extra.shape[-1]
        pad = _padding_for(kw.get("backend"), d)
        parts = [feats, extra.to(feats.dtype)] + [feats.new_zeros(*extra.shape[:-1], pad)] * (pad > 0)
        feats = torch.cat(parts, -1)
    out = rasterize(means, quats, scales, opacities, feats, viewmats, Ks, width, height, **kw)
    f = out["features"][:, :d]
    if mode == "per_camera":
        out["features"], out["zsq"] = f[:, :-1], f[:, -1:]
    else:
        with torch.autocast(means.device.type, enabled=False):  # a bf16 einsum would ruin the cancellation
            out["features"], out["zsq"] = f[:, :-9], zsq_from_moments(f[:, -9:], out["alpha"], viewmats)
    return out


def _rasterize_gsplat(means, quats, scales, opacities, features, viewmats, Ks, width, height, near, far,
                      packed=True, tile_size=16):
    """One gsplat.rasterization call -> (C, D+2, H, W): features, accumulated depth, alpha."""
    from gsplat import rasterization
    N = means.shape[0]
    D = 0 if features is None else features.shape[-1]
    colours = features if D > 0 else means.new_zeros(N, 1)  # ignored in mode "D"
    render, alpha, _ = rasterization(
        means, quats, scales, opacities, colours, viewmats, Ks, width, height,
        near_plane=near, far_plane=far, radius_clip=0.0, eps2d=EPS2D, sh_degree=None, packed=packed,
        tile_size=tile_size, render_mode="RGB+D" if D > 0 else "D", rasterize_mode="classic",
        camera_model="pinhole", channel_chunk=max(32, D + 1))
    # render (C,H,W,D+1): features then accumulated depth; alpha (C,H,W,1).
    return torch.cat([render, alpha], dim=-1).permute(0, 3, 1, 2)


def quat_scale_to_rs(quats, scales):
    """quats (N,4) wxyz, scales (N,3) -> M = R(q) diag(s) (N,3,3); the covariance is M M^T."""
    w, x, y, z = (quats / quats.norm(dim=-1, keepdim=True)).unbind(-1)
    R = torch.stack([
        1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
        2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
        2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)], dim=-1).unflatten(-1, (3, 3))
    return R * scales[:, None, :]


def project_gaussians(means, quats, scales, opacities, viewmats, Ks, width, height, near, far):
    """EWA projection of every (camera, Gaussian) pair that survives gsplat's culling (packed).

    Ks use gsplat's +0.5 pixel centres. Returns a dict over the K_ kept pairs, sorted by camera z (ties:
    camera-major order): cam (K_,) and gid (K_,) long indices, mean2d (K_,2), conic (K_,3) = (a, b, c) of
    cov2d^-1 = [[a, b], [b, c]], z (K_,) camera depth, opacity (K_,), radius (K_,2) pixel half-extents (no grad).
    Small matrix products are written out elementwise (CPU batched 3x3 matmuls are slow).
    """
    W_rot, t = viewmats[:, :3, :3], viewmats[:, :3, 3]
    with torch.no_grad():
        z_all = W_rot[:, 2, :] @ means.T + t[:, 2:3]  # (C, N)
        cam, gid = ((z_all >= near) & (z_all <= far)).nonzero(as_tuple=True)  # camera-major
    Wc = W_rot.index_select(0, cam)  # (K,3,3)
    p = (Wc * means.index_select(0, gid)[:, None, :]).sum(-1) + t.index_select(0, cam)
    Kc = Ks.index_select(0, cam)
    fx, fy, cx, cy = Kc[:, 0, 0], Kc[:, 1, 1], Kc[:, 0, 2], Kc[:, 1, 2]
    x, y, z = p.unbind(-1)
    # Jacobian of the projection, evaluated with x/z, y/z clamped to FOV_CLIP half fields of view.
    lim_xp = (width - cx) / fx + (FOV_CLIP - 1) * 0.5 * width / fx
    lim_xn = cx / fx + (FOV_CLIP - 1) * 0.5 * width / fx
    lim_yp = (height - cy) / fy + (FOV_CLIP - 1) * 0.5 * height / fy
    lim_yn = cy / fy + (FOV_CLIP - 1) * 0.5 * height / fy
    tx = z * torch.minimum(lim_xp, torch.maximum(-lim_xn, x / z))
    ty = z * torch.minimum(lim_yp, torch.maximum(-lim_yn, y / z))
    # Rows of J W: J = [[fx/z, 0, -fx tx/z^2], [0, fy/z, -fy ty/z^2]]; then A = J W R S and cov2d = A A^T.
    JW0 = (fx / z)[:, None] * Wc[:, 0] - (fx * tx / (z * z))[:, None] * Wc[:, 2]
    JW1 = (fy / z)[:, None] * Wc[:, 1] - (fy * ty / (z * z))[:, None] * Wc[:, 2]
    M = quat_scale_to_rs(quats, scales).index_select(0, gid)
    A0, A1 = (JW0[:, :, None] * M).sum(1), (JW1[:, :, None] * M).sum(1)
    a = (A0 * A0).sum(-1) + EPS2D
    b = (A0 * A1).sum(-1)
    c = (A1 * A1).sum(-1) + EPS2D
    det = a * c - b * b
    mean2d = torch.stack([fx * x / z + cx, fy * y / z + cy], -1)
    o = opacities.index_select(0, gid)
    with torch.no_grad():
        ok = (det > 0) & (o >= ALPHA_MIN)
        extend = torch.sqrt(2 * torch.log(o.clamp(min=ALPHA_MIN) / ALPHA_MIN)).clamp(max=EXTEND_MAX)
        radius = torch.stack([torch.ceil(extend * a.clamp(min=0).sqrt()),
                              torch.ceil(extend * c.clamp(min=0).sqrt())], -1)
        ok &= (radius > 0).any(-1)
        ok &= (mean2d[:, 0] + radius[:, 0] > 0) & (mean2d[:, 0] - radius[:, 0] < width)
        ok &= (mean2d[:, 1] + radius[:, 1] > 0) & (mean2d[:, 1] - radius[:, 1] < height)
        keep = ok.nonzero()[:, 0]
        keep = keep[torch.sort(z.index_select(0, keep), stable=True).indices]  # front to back
    det = det.index_select(0, keep)
    conic = torch.stack([c.index_select(0, keep) / det, -b.index_select(0, keep) / det,
                         a.index_select(0, keep) / det], -1)
    return {"cam": cam.index_select(0, keep), "gid": gid.index_select(0, keep),
            "mean2d": mean2d.index_select(0, keep), "conic": conic, "z": z.index_select(0, keep),
            "opacity": o.index_select(0, keep), "radius": radius.index_select(0, keep)}


def _pair_alpha(mean2d, conic, opacity, px, py):
    """Alpha of pixel-Gaussian pairs (rows already gathered); px, py pixel centres. Returns (alpha, sigma)."""
    dx, dy = mean2d[:, 0] - px, mean2d[:, 1] - py
    sigma = 0.5 * (conic[:, 0] * dx * dx + conic[:, 2] * dy * dy) + conic[:, 1] * dx * dy
    return (opacity * torch.exp(-sigma)).clamp(max=ALPHA_MAX), sigma


def _expand(counts, device):
    """counts (G,) -> (owner (S,), index within owner (S,)), S = counts.sum()."""
    owner = torch.repeat_interleave(torch.arange(counts.shape[0], device=device), counts)
    first = counts.cumsum(0) - counts
    return owner, torch.arange(owner.shape[0], device=device) - first.index_select(0, owner)


def _pixel_pairs(proj, width, height, max_pairs):
    """(no grad) pixel-Gaussian pairs with alpha >= 1/255, in the order of ``proj`` (front to back).

    For each projected Gaussian: the rows of its box (radius, clipped to the image), and in each row the pixels
    whose centre (+0.5) lies in the ellipse sigma <= ln(255 o) (the only ones that can reach alpha 1/255), widened
    by a hair; then gsplat's alpha test on each pair decides. Works in chunks of Gaussians of about max_pairs box
    pixels. Returns k (P,) row of ``proj``, pix (P,) camera * H * W + row * W + column, alpha (P,).
    """
    m, r, con, o = proj["mean2d"], proj["radius"], proj["conic"], proj["opacity"]
    dev = m.device
    x0 = torch.ceil(m[:, 0] - r[:, 0] - 0.5).clamp(min=0).long()
    x1 = torch.floor(m[:, 0] + r[:, 0] - 0.5).clamp(max=width - 1).long()
    y0 = torch.ceil(m[:, 1] - r[:, 1] - 0.5).clamp(min=0).long()
    y1 = torch.floor(m[:, 1] + r[:, 1] - 0.5).clamp(max=height - 1).long()
    n_rows = (y1 - y0 + 1).clamp(min=0)
    cum = (n_rows * (x1 - x0 + 1).clamp(min=0)).cumsum(0)
    level = torch.log(o / ALPHA_MIN) * (1 + 1e-4) + 1e-6  # sigma bound, with a margin
    none = torch.zeros(0, dtype=torch.long, device=dev)
    ks, pixs, alphas = [none], [none], [m.new_zeros(0)]
    start, K = 0, m.shape[0]
    while start < K:
        base = cum[start - 1] if start > 0 else 0
        end = max(int(torch.searchsorted(cum, base + max_pairs, right=True)), start + 1)
        g, row = _expand(n_rows[start:end], dev)
        g += start
        py = y0.index_select(0, g) + row
        # Span of the row inside the ellipse: 0.5 a ex^2 + b ey ex + 0.5 c ey^2 <= level, e = pixel - mean.
        ey = py + 0.5 - m[:, 1].index_select(0, g)
        ca, cb, cc = con.index_select(0, g).unbind(-1)
        disc = (cb * ey) ** 2 - ca * (cc * ey * ey - 2 * level.index_select(0, g))
        half = disc.clamp(min=0).sqrt() / ca
        mid = m[:, 0].index_select(0, g) - cb * ey / ca
        lo = torch.maximum(torch.ceil(mid - half - 0.5).long(), x0.index_select(0, g))
        hi = torch.minimum(torch.floor(mid + half - 0.5).long(), x1.index_select(0, g))
        span = torch.where(disc >= 0, (hi - lo + 1).clamp(min=0), torch.zeros_like(lo))
        j, col = _expand(span, dev)
        k = g.index_select(0, j)
        px, py = lo.index_select(0, j) + col, py.index_select(0, j)
        alpha, sigma = _pair_alpha(m.index_select(0, k), con.index_select(0, k), o.index_select(0, k),
                                   px + 0.5, py + 0.5)
        ok = ((alpha >= ALPHA_MIN) & (sigma >= 0)).nonzero()[:, 0]
        k = k.index_select(0, ok)
        ks.append(k)
        pixs.append((proj["cam"].index_select(0, k) * height + py.index_select(0, ok)) * width
                    + px.index_select(0, ok))
        alphas.append(alpha.index_select(0, ok))
        start = end
    return torch.cat(ks), torch.cat(pixs), torch.cat(alphas)


def _segment_exclusive_cumsum(x, seg_start):
    """x (P,) float64 in segments that begin where seg_start (P,) bool is True -> sum of the earlier
    entries of the same segment (P,)."""
    cs = torch.cumsum(x, 0)
    excl = cs - x
    seg = torch.cumsum(seg_start.long(), 0) - 1
    return excl - excl[seg_start][seg]


def _rasterize_torch(means, quats, scales, opacities, features, viewmats, Ks, width, height, near, far, max_pairs):
    """Pure PyTorch reference -> (C, D+2, H, W): features, accumulated depth, alpha."""
    C, HW = viewmats.shape[0], height * width
    D = 0 if features is None else features.shape[-1]
    proj = project_gaussians(means, quats, scales, opacities, viewmats, Ks, width, height, near, far)
    # Per projected Gaussian: the channels to composite (features, camera z, 1 for alpha).
    rows = [proj["z"][:, None], torch.ones_like(proj["z"])[:, None]]
    if D > 0:
        rows.insert(0, features.index_select(0, proj["gid"]) if features.dim() == 2 else
                    features[proj["cam"], proj["gid"]])
    F_k = torch.cat(rows, -1)
    with torch.no_grad():
        k, pix, alpha = _pixel_pairs(proj, width, height, max_pairs)
        # Pairs come in front-to-back order of k; a stable sort by pixel gives (pixel, depth) order.
        order = torch.sort(pix, stable=True).indices
        k, pix, alpha = k.index_select(0, order), pix.index_select(0, order), alpha.index_select(0, order)
        seg_start = torch.ones_like(pix, dtype=torch.bool)
        seg_start[1:] = pix[1:] != pix[:-1]
        # Early stop: keep a pair while its inclusive transmittance stays > T_MIN (T falls monotonically).
        log1m = torch.log1p(-alpha.double())
        keep = (_segment_exclusive_cumsum(log1m, seg_start) + log1m > math.log(T_MIN)).nonzero()[:, 0]
        k, pix, seg_start = k.index_select(0, keep), pix.index_select(0, keep), seg_start.index_select(0, keep)
    # Differentiable part on the kept pairs (the dropped ones were segment tails: earlier T are unchanged).
    px = (pix % width).to(means.dtype) + 0.5
    py = torch.div(pix % HW, width, rounding_mode="floor").to(means.dtype) + 0.5
    alpha, _ = _pair_alpha(proj["mean2d"].index_select(0, k), proj["conic"].index_select(0, k),
                           proj["opacity"].index_select(0, k), px, py)
    T = torch.exp(_segment_exclusive_cumsum(torch.log1p(-alpha.double()), seg_start)).to(alpha.dtype)
    out = _composite(alpha * T, k, pix, F_k, C * HW)
    return out.view(C, height, width, D + 2).permute(0, 3, 1, 2)


class _Composite(torch.autograd.Function):
    """out[pix[p]] += w[p] * F[k[p]] over all pairs p, in chunks, without keeping the (P, E) products."""

    CHUNK = 1 << 20

    @staticmethod
    def forward(ctx, w, k, pix, F, n_pix):
        out = F.new_zeros(n_pix, F.shape[1])
        for s in range(0, w.shape[0], _Composite.CHUNK):
            e = s + _Composite.CHUNK
            out.index_add_(0, pix[s:e], w[s:e, None] * F.index_select(0, k[s:e]))
        ctx.save_for_backward(w, k, pix, F)
        return out

    @staticmethod
    def backward(ctx, grad_out):
        w, k, pix, F = ctx.saved_tensors
        grad_w = torch.empty_like(w) if ctx.needs_input_grad[0] else None
        grad_F = torch.zeros_like(F) if ctx.needs_input_grad[3] else None
        for s in range(0, w.shape[0], _Composite.CHUNK):
            e = s + _Composite.CHUNK
            g = grad_out.index_select(0, pix[s:e])
            if grad_w is not None:
                grad_w[s:e] = (g * F.index_select(0, k[s:e])).sum(-1)
            if grad_F is not None:
                grad_F.index_add_(0, k[s:e], w[s:e, None] * g)
        return grad_w, None, None, grad_F, None


def _composite(w, k, pix, F, n_pix):
    """w (P,) weights, k (P,) rows of F (K,E), pix (P,) output rows -> (n_pix, E) = sum_p w_p F[k_p]."""
    return _Composite.apply(w, k, pix, F, n_pix)
