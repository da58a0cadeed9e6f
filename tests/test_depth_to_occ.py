"""tools/diagnostics/depth_to_occ.py: the depth-only volume marks where rays end, and exact depth scores far above
noisy depth on a small synthetic keyframe."""
import numpy as np

from datasets.synthetic import rig
from datasets.synthetic.frame import pixel_rays
from tools.diagnostics.depth_to_occ import (THRESHOLDS, depth_factor, depth_volume, keyframe, occupied_scores,
                                            read_out, sigma_for_absrel)
from utils.constants import FREE_ID, OCC3D_LABEL_RANGE, OCC3D_SHAPE, OCC3D_VOXEL


def test_a_known_ray():
    """From CAM_FRONT's centre (1.70, 0.02, 1.51) straight ahead for 10 m: the ray ends at x = 11.70 m, in voxel
    (129, 100, 4) (x: (11.70 + 40) / 0.4 = 129.3, z: (1.51 + 0.2) / 0.4 = 4.3), after passing x = 104 .. 128."""
    hits, passes = depth_volume(rig.cam2ego()[0][:3, 3], np.array([[1.0, 0.0, 0.0]]), np.array([10.0]))
    assert hits[129, 100, 4] == 1 and hits.sum() == 1
    assert (passes[104:129, 100, 4] == 1).all() and passes.sum() == 25
    occ = read_out(hits, passes, 0.0)
    assert occ[129, 100, 4] == 0 and (occ != FREE_ID).sum() == 1
    assert read_out(hits, passes, 0.5)[129, 100, 4] == 0  # one hit, no pass: hit ratio 1


def test_one_camera_marks_where_its_rays_end():
    """CAM_FRONT at 9 x 16 looking at a wall of camera z = 10 m: exactly the voxels where its rays end are
    occupied, each ray crosses free voxels before; a ray with no end (sky) or an end outside the grid (below the
    road) marks nothing occupied."""
    h, w = 9, 16
    K, c2e = rig.intrinsics(h, w, "CAM_FRONT"), rig.cam2ego()[0]
    rays = pixel_rays(K, h, w)
    dirs = rays @ c2e[:3, :3].T
    ranges = 10.0 / rays[:, 2]
    ranges[0] = np.inf  # one sky pixel
    hits, passes = depth_volume(c2e[:3, 3], dirs, ranges)
    lo = np.array(OCC3D_LABEL_RANGE[:3])
    ends = c2e[:3, 3] + ranges[1:, None] * dirs[1:]
    vox = np.floor((ends - lo) / OCC3D_VOXEL).astype(int)
    inside = ((vox >= 0) & (vox < OCC3D_SHAPE)).all(1)  # the lowest rows end below the grid
    assert 0 < (~inside).sum() < 0.3 * len(vox)
    end_vox = {tuple(v) for v in vox[inside]}
    assert {tuple(v) for v in np.argwhere(hits > 0)} == end_vox
    assert hits.sum() == inside.sum()
    assert passes.sum() > 20 * (h * w)  # 10 m: at least 25 voxels of 0.4 m each
    assert (read_out(hits, passes, 0.0) != FREE_ID).sum() == len(end_vox)


def test_noise_levels():
    """The log-normal factor has the asked AbsRel and median 1."""
    f = depth_factor("pixel", 0.18, np.full((6, 30, 40), 20.0), np.random.default_rng(0))
    assert abs(np.abs(f - 1).mean() - 0.18) < 0.005 and abs(np.median(f) - 1) < 0.01
    assert abs(sigma_for_absrel(0.05) - 0.0626) < 1e-3  # exp(s^2 / 2) erf(s / sqrt 2) = 0.05


def test_exact_depth_beats_noisy_depth():
    """Street 12 (3 keyframes), keyframe 1 at 45 x 80: every exact ray ends in an occupied voxel (precision 100 %),
    and per-pixel noise of AbsRel 0.18 loses most of the geo IoU."""
    evals, absrel = keyframe(0, 12, 3, 1, [(45, 80)], ["exact", "pixel:0.18"])
    exact, noisy = (occupied_scores(evals[(r, (45, 80), 0.0)]) for r in ("exact", "pixel:0.18"))
    assert absrel[("exact", (45, 80))] == 0 and abs(absrel[("pixel:0.18", (45, 80))] - 0.18) < 0.01
    assert exact["precision"] == 100.0 and exact["fp"] == 0
    assert 30 < exact["geo_iou"] < 45, exact  # 36.6: at 45 x 80 most far voxels get no ray
    assert noisy["geo_iou"] < 0.5 * exact["geo_iou"], (exact, noisy)  # 11.5
    assert noisy["precision"] < 60, noisy
    assert {t for _, _, t in evals} == set(THRESHOLDS)
