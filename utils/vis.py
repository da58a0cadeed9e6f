"""Pictures without mayavi: depth / semantic colouring, 6-camera mosaics, BEV and 3D views of occupancy grids.

Every function takes numpy arrays (or tensors, converted) and returns ``uint8`` RGB images ``(H, W, 3)``.
The 3D view draws the visible faces of the occupied voxels with OpenCV polygons, far to near (painter's
algorithm), from a chase camera behind and above the ego car: about 0.3 s for a full Occ3D grid at 640x360.
"""
import cv2
import numpy as np
from matplotlib import colormaps

from utils.constants import CAMS, FREE_ID, IGNORE_ID, OCC3D_LABEL_RANGE, OCC_COLORS

# 2x3 mosaic in the nuScenes layout (names index into utils.constants.CAMS).
MOSAIC_LAYOUT = [
    ["CAM_FRONT_LEFT", "CAM_FRONT", "CAM_FRONT_RIGHT"],
    ["CAM_BACK_LEFT", "CAM_BACK", "CAM_BACK_RIGHT"],
]
PALETTE = np.zeros((256, 3), np.uint8)  # class id -> colour; ignore (255) and unknown ids are black
PALETTE[: len(OCC_COLORS)] = OCC_COLORS
BACKGROUND = (250, 250, 250)


def to_numpy(x):
    """Tensor or array -> numpy array (detached, on the CPU)."""
    if hasattr(x, "detach"):
        x = x.detach().float().cpu().numpy() if x.is_floating_point() else x.detach().cpu().numpy()
    return np.asarray(x)


def image_to_uint8(img):
    """Float image in [0, 1], (3, H, W) or (H, W, 3) -> uint8 (H, W, 3)."""
    img = to_numpy(img)
    if img.ndim == 3 and img.shape[0] == 3 and img.shape[2] != 3:
        img = img.transpose(1, 2, 0)
    if img.dtype != np.uint8:
        img = (np.clip(img, 0, 1) * 255 + 0.5).astype(np.uint8)
    return img


def depth_to_color(depth, vmax_percentile=95, cmap="magma"):
    """Colour a depth map (H, W) or (1, H, W) by inverse depth, near = bright; pixels with depth <= 0 are black.

    Inverse depth is normalised by its ``vmax_percentile`` percentile over the valid pixels.
    """
    depth = to_numpy(depth).astype(np.float32)
    depth = depth[0] if depth.ndim == 3 else depth
    valid = depth > 0
    disp = np.zeros_like(depth)
    disp[valid] = 1.0 / depth[valid]
    vmax = np.percentile(disp[valid], vmax_percentile) if valid.any() else 1.0
    rgb = colormaps[cmap](np.clip(disp / max(vmax, 1e-6), 0, 1))[..., :3]
    rgb[~valid] = 0
    return (rgb * 255 + 0.5).astype(np.uint8)


def semantic_to_color(labels):
    """Class ids (any shape) -> RGB uint8 with ``OCC_COLORS`` (free white, ignore 255 black)."""
    return PALETTE[to_numpy(labels).astype(np.int64).clip(0, 255)]


def logits_to_color(logits, alpha=None, min_alpha=0.5):
    """Rendered semantic features (C, H, W) -> colours of the arg-max class among the first 17 (not free).

    Pixels whose rendered ``alpha`` (H, W) is below ``min_alpha`` (nothing there) are black.
    """
    logits = to_numpy(logits)
    labels = logits[:FREE_ID].argmax(0)
    rgb = semantic_to_color(labels)
    if alpha is not None:
        alpha = to_numpy(alpha)
        rgb[(alpha[0] if alpha.ndim == 3 else alpha) < min_alpha] = 0
    return rgb


def put_label(img, text, scale=None):
    """Copy of ``img`` with ``text`` written in its top-left corner, white on a black outline (default size:
    in proportion to the image width)."""
    img = np.ascontiguousarray(img).copy()
    scale = scale or float(np.clip(img.shape[1] / 640, 0.3, 0.6))
    org = (4, int(6 + 22 * scale))
    for colour, thickness in (((0, 0, 0), 3), ((255, 255, 255), 1)):
        cv2.putText(img, text, org, cv2.FONT_HERSHEY_SIMPLEX, scale, colour, thickness, cv2.LINE_AA)
    return img


def mosaic(images, names=CAMS, labels=False):
    """Six (H, W, 3) images given in ``names`` order -> (2H, 3W, 3) in ``MOSAIC_LAYOUT``.

    Images of other sizes are resized to the first one's size. ``labels`` writes the camera name on each tile.
    """
    if len(images) != len(names):
        raise ValueError(f"mosaic needs {len(names)} images, got {len(images)}")
    by_name = {n: image_to_uint8(im) for n, im in zip(names, images)}
    h, w = by_name[names[0]].shape[:2]
    rows = []
    for row in MOSAIC_LAYOUT:
        tiles = []
        for n in row:
            tile = by_name[n]
            if tile.shape[:2] != (h, w):
                tile = cv2.resize(tile, (w, h), interpolation=cv2.INTER_NEAREST)
            if labels:
                tile = put_label(tile, n.replace("CAM_", ""))
            tiles.append(tile)
        rows.append(np.concatenate(tiles, 1))
    return np.concatenate(rows, 0)


def depth_mosaic(depth):
    """Six depth maps (6, h, w) -> their inverse-depth colours as a 2x3 mosaic (2h, 3w, 3) uint8."""
    return mosaic([depth_to_color(d) for d in depth])


def semantic_mosaic(sem, alpha):
    """Six rendered semantic maps (6, C, h, w) and their alpha (6, 1, h, w) -> a 2x3 mosaic of class colours."""
    return mosaic([logits_to_color(s, a) for s, a in zip(sem, alpha)])


def cross_view_picture(gsp):
    """The GSP cross-view maps of stage 1 (``utils.gsp.cross_view_loss``'s dict: render / target (B, S, T, 3, H, W),
    mask (B, S, T, 1, H, W)) of the first sample and its second target -> (3H, 6W, 3) uint8: one column per source
    camera i, rows = the real image of its neighbour, the splatted rendering of i's pixel Gaussians in it, and the
    neighbour's image with the eroded overlap mask (outside tinted red)."""
    g = {k: to_numpy(v[0, :, 1]).transpose(0, 2, 3, 1) for k, v in gsp.items()}  # (6, H, W, C)
    red = np.array([0.6, 0.0, 0.0], np.float32)
    tinted = g["target"] * (0.4 + 0.6 * g["mask"]) + red * (1 - g["mask"])
    rows = [np.concatenate([image_to_uint8(x) for x in g[k]], 1) for k in ("target", "render")]
    rows.append(np.concatenate([image_to_uint8(x) for x in tinted], 1))
    return np.concatenate(rows, 0)


def training_pictures(batch, outputs, occupancy=None):
    """The pictures of a model's training outputs for tensorboard, first sample of the batch: dict of (3, H, W)
    uint8 (channels first), each one where its inputs exist:
      images          the 6 current input images (2x3 mosaic), from ``batch['imgs']``;
      depth           ``outputs['depth']`` (B, 6, h, w) in inverse-depth colours;
      semantics       ``outputs['sem']`` (B, 6, C, h, w) with C > 1 and ``outputs['alpha']``: class colours;
      gsp_cross_view  ``outputs['gsp']`` (stage 1's cross-view maps, ``cross_view_picture``);
      occ_bev         top view of ``occupancy`` (X, Y, Z) class ids (stage 2: the model's read-out of its logits).
    """
    pics = {}
    if "imgs" in batch:
        pics["images"] = mosaic([image_to_uint8(im) for im in batch["imgs"][0, 1]])
    if "depth" in outputs:
        pics["depth"] = depth_mosaic(outputs["depth"][0])
    if "sem" in outputs and outputs["sem"].shape[2] > 1:
        pics["semantics"] = semantic_mosaic(outputs["sem"][0], outputs["alpha"][0])
    if "gsp" in outputs:
        pics["gsp_cross_view"] = cross_view_picture(outputs["gsp"])
    if occupancy is not None:
        pics["occ_bev"] = bev_image(occupancy)
    return {k: np.ascontiguousarray(v.transpose(2, 0, 1)) for k, v in pics.items()}


def occupied(occ):
    """Boolean mask of the voxels holding a class (not free, not ignore)."""
    occ = to_numpy(occ)
    return (occ != FREE_ID) & (occ != IGNORE_ID)


def bev_image(occ, background=BACKGROUND, observed=None, shade=0.35):
    """Top view of an (X, Y, Z) grid: colour of the highest occupied voxel of each column, ``background`` where
    there is none; with ``observed`` ((X, Y, Z) bool, e.g. mask_camera) the columns without an observed voxel are
    darkened (x ``shade``).

    The image is (X, Y, 3) with forward (+x) up and left (+y) on the left, the ego car at the centre.
    """
    occ = to_numpy(occ)
    occ_mask = occupied(occ)
    top = occ.shape[2] - 1 - np.argmax(occ_mask[:, :, ::-1], axis=2)  # highest occupied z per column
    ids = np.take_along_axis(occ, top[..., None], 2)[..., 0]
    rgb = semantic_to_color(ids)
    rgb[~occ_mask.any(2)] = background
    if observed is not None:
        rgb = rgb.astype(np.float32)
        rgb[~to_numpy(observed).any(2)] *= shade
        rgb = rgb.astype(np.uint8)
    return rgb[::-1, ::-1].copy()


def look_at(eye, target, up=(0.0, 0.0, 1.0)):
    """4x4 world -> camera (OpenCV: x right, y down, z forward) for a camera at ``eye`` looking at ``target``."""
    eye, target, up = (np.asarray(v, np.float64) for v in (eye, target, up))
    z = target - eye
    z /= np.linalg.norm(z)
    x = np.cross(z, up)
    x /= np.linalg.norm(x)
    y = np.cross(z, x)
    view = np.eye(4)
    view[:3, :3] = np.stack([x, y, z])
    view[:3, 3] = -view[:3, :3] @ eye
    return view


def chase_camera(width=640, height=360, eye=(-60.0, 0.0, 62.0), target=(4.0, 0.0, 0.0), fov_deg=55.0):
    """Intrinsics (3, 3) and ego -> camera (4, 4) of a camera behind and above the ego car."""
    f = 0.5 * width / np.tan(np.radians(fov_deg) / 2)
    K = np.array([[f, 0, width / 2], [0, f, height / 2], [0, 0, 1]])
    return K, look_at(eye, target)


def _cube_faces():
    """The 6 faces of a unit cube: (normal axis, sign, brightness, 4 corners in unit-cube coordinates)."""
    faces = []
    for axis in range(3):
        u, v = [a for a in range(3) if a != axis]
        for sign in (-1, 1):
            corners = np.zeros((4, 3))
            corners[:, axis] = (sign + 1) / 2
            corners[:, u] = [0, 1, 1, 0]
            corners[:, v] = [0, 0, 1, 1]
            shade = {0: 0.8, 1: 0.68, 2: 1.0 if sign > 0 else 0.5}[axis]  # lit from above, x sides brighter
            faces.append((axis, sign, shade, corners))
    return faces


_FACES = _cube_faces()


def _visible_faces(occ_mask, lo, size, eye):
    """Corners (F, 4, 3), voxel index (F, 3) and shade (F,) of the exposed voxel faces turned to ``eye``."""
    corners, cells, shades = [], [], []
    padded = np.pad(occ_mask, 1)
    for axis, sign, shade, unit in _FACES:
        shifted = np.roll(padded, -sign, axis=axis)[1:-1, 1:-1, 1:-1]
        idx = np.argwhere(occ_mask & ~shifted)
        if not len(idx):
            continue
        centre = lo + (idx + 0.5) * size
        normal = np.zeros(3)
        normal[axis] = sign
        face_centre = centre + normal * size / 2
        idx = idx[(eye - face_centre) @ normal > 0]
        corners.append(lo + (idx[:, None, :] + unit[None]) * size)
        cells.append(idx)
        shades.append(np.full(len(idx), shade))
    if not corners:
        return np.zeros((0, 4, 3)), np.zeros((0, 3), int), np.zeros(0)
    return np.concatenate(corners), np.concatenate(cells), np.concatenate(shades)


def render_voxels(occ, width=640, height=360, camera=None, grid_range=OCC3D_LABEL_RANGE, background=BACKGROUND,
                  edges=True, ego_box=True):
    """3D view of an (X, Y, Z) grid of class ids: coloured, shaded cubes seen by ``camera`` = (K, ego2cam)
    (default ``chase_camera``). ``ego_box`` draws the ego car as a dark box at the origin."""
    occ = to_numpy(occ)
    K, view = camera if camera is not None else chase_camera(width, height)
    lo = np.asarray(grid_range[:3], np.float64)
    size = (np.asarray(grid_range[3:], np.float64) - lo) / np.asarray(occ.shape)
    eye = -view[:3, :3].T @ view[:3, 3]
    corners, cells, shades = _visible_faces(occupied(occ), lo, size, eye)
    colours = PALETTE[occ[tuple(cells.T)]].astype(np.float64) if len(cells) else np.zeros((0, 3))
    if ego_box:
        box = np.ones((1, 1, 1), bool)
        e_corners, _, e_shades = _visible_faces(box, np.array([-2.0, -0.9, 0.0]), np.array([4.0, 1.8, 1.6]), eye)
        corners = np.concatenate([corners, e_corners])
        colours = np.concatenate([colours, np.full((len(e_corners), 3), 60.0)])
        shades = np.concatenate([shades, e_shades])
    img = np.empty((height, width, 3), np.uint8)
    img[:] = background
    if not len(corners):
        return img
    cam = corners @ view[:3, :3].T + view[:3, 3]
    in_front = (cam[..., 2] > 0.1).all(1)
    cam, colours, shades = cam[in_front], colours[in_front], shades[in_front]
    pix = cam @ K.T
    pix = pix[..., :2] / pix[..., 2:3]
    on_screen = ((pix[..., 0].max(1) >= 0) & (pix[..., 0].min(1) < width) &
                 (pix[..., 1].max(1) >= 0) & (pix[..., 1].min(1) < height))
    dist = np.linalg.norm(cam.mean(1), axis=1)
    order = np.argsort(-dist[on_screen])
    pts = np.round(pix[on_screen][order] * 16).astype(np.int32)  # 4 bits of sub-pixel precision
    fill = (colours[on_screen] * shades[on_screen, None])[order]
    line = fill * 0.7
    for p, c, e in zip(pts, fill.tolist(), line.tolist()):
        cv2.fillConvexPoly(img, p, c, cv2.LINE_AA, 4)
        if edges:
            cv2.polylines(img, [p], True, e, 1, cv2.LINE_AA, 4)
    return img


def compose(rows, width=None, pad=4, background=255):
    """Stack rows of images into one picture: each row's images get the same height and are put side by side,
    then every row is scaled to ``width`` (default: the first row's width) and the rows are stacked."""
    out_rows = []
    for row in rows:
        h = max(im.shape[0] for im in row)
        tiles = [cv2.resize(im, (round(im.shape[1] * h / im.shape[0]), h), interpolation=cv2.INTER_AREA)
                 if im.shape[0] != h else im for im in row]
        gap = np.full((h, pad, 3), background, np.uint8)
        line = np.concatenate([t for tile in tiles for t in (tile, gap)][:-1], 1)
        width = width or line.shape[1]
        if line.shape[1] != width:
            line = cv2.resize(line, (width, round(h * width / line.shape[1])), interpolation=cv2.INTER_AREA)
        out_rows += [line, np.full((pad, width, 3), background, np.uint8)]
    return np.concatenate(out_rows[:-1], 0)
