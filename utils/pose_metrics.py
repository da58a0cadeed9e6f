"""Ego-motion metrics for one scene: metric scale ratio, relative pose error (RPE), absolute trajectory error (ATE).

Motion convention (the same as ``PoseNet`` / ``GSPModel.predict_pose`` and ``geometry.ego_motion_to_cam``):
the motion from frame k to frame k+1 is the 4x4 transform ``M_k = inv(E_{k+1}) @ E_k`` (E = ego2global) that maps
the coordinates of a static point in ego frame k to its coordinates in ego frame k+1. Its translation has the
length of the distance driven between the two frames. All inputs are numpy-compatible (N, 4, 4) float arrays
(lists of 4x4 or tensors are converted); computations run in float64.
"""
import numpy as np


def _as_poses(x, name):
    x = np.asarray(x.detach().cpu() if hasattr(x, "detach") else x, dtype=np.float64)
    if x.ndim != 3 or x.shape[1:] != (4, 4):
        raise ValueError(f"{name} must be a sequence of 4x4 transforms (N, 4, 4), got shape {x.shape}")
    return x


def _pair(pred, true):
    pred, true = _as_poses(pred, "pred"), _as_poses(true, "true")
    if len(pred) != len(true) or len(pred) == 0:
        raise ValueError(f"pred and true must hold the same, non-zero number of motions, got {len(pred)} and "
                         f"{len(true)}")
    return pred, true


def relative_motions(ego2global):
    """True motions between consecutive frames. ego2global: (N, 4, 4) -> (N-1, 4, 4), M_k = inv(E_{k+1}) E_k."""
    E = _as_poses(ego2global, "ego2global")
    if len(E) < 2:
        raise ValueError(f"ego2global needs at least 2 poses, got {len(E)}")
    return np.linalg.inv(E[1:]) @ E[:-1]


def chain_motions(motions):
    """Trajectory from motions: (N, 4, 4) -> (N+1, 4, 4) poses of each ego frame in frame 0 (P_0 = I,
    P_{k+1} = P_k inv(M_k)); translation column = position."""
    M = _as_poses(motions, "motions")
    poses = [np.eye(4)]
    for m in M:
        poses.append(poses[-1] @ np.linalg.inv(m))
    return np.stack(poses)


def scale_ratio(pred, true, min_motion=0.05):
    """|t_pred| / |t_true| over pairs whose true motion exceeds ``min_motion`` metres.

    Returns dict(median, mean, count); median and mean are NaN when no pair moves enough.
    """
    pred, true = _pair(pred, true)
    n_pred = np.linalg.norm(pred[:, :3, 3], axis=1)
    n_true = np.linalg.norm(true[:, :3, 3], axis=1)
    moving = n_true > min_motion
    r = n_pred[moving] / n_true[moving]
    if r.size == 0:
        return {"median": float("nan"), "mean": float("nan"), "count": 0}
    return {"median": float(np.median(r)), "mean": float(r.mean()), "count": int(r.size)}


def rpe(pred, true):
    """Relative pose error per pair, averaged: translation (m) and rotation (deg) of inv(M_true) M_pred.

    Returns dict(trans, rot); trans equals the mean of |t_pred - t_true|.
    """
    pred, true = _pair(pred, true)
    err = np.linalg.inv(true) @ pred
    trans = np.linalg.norm(err[:, :3, 3], axis=1)
    cos = (np.trace(err[:, :3, :3], axis1=1, axis2=2) - 1) / 2
    rot = np.degrees(np.arccos(np.clip(cos, -1.0, 1.0)))
    return {"trans": float(trans.mean()), "rot": float(rot.mean())}


def align_rigid(src, dst):
    """Rotation R and translation t minimising sum |R src_i + t - dst_i|^2 (Kabsch; no scale).

    src, dst: (N, 3). Returns R (3, 3) with det +1 and t (3,).
    """
    mu_s, mu_d = src.mean(0), dst.mean(0)
    U, _, Vt = np.linalg.svd((dst - mu_d).T @ (src - mu_s))
    D = np.diag([1.0, 1.0, np.sign(np.linalg.det(U @ Vt)) or 1.0])
    R = U @ D @ Vt
    return R, mu_d - R @ mu_s


def ate(pred, true):
    """Absolute trajectory error (m): chain both motion sequences from the same start, align the predicted
    positions to the true ones with a rigid transform (scale fixed to 1, so a wrong metric scale is penalised)
    and return the RMSE of the position differences over all N+1 frames."""
    pred, true = _pair(pred, true)
    p = chain_motions(pred)[:, :3, 3]
    q = chain_motions(true)[:, :3, 3]
    R, t = align_rigid(p, q)
    return float(np.sqrt((((p @ R.T + t) - q) ** 2).sum(1).mean()))


def pose_metrics(pred, true, min_motion=0.05):
    """All metrics for one scene as a flat dict of floats: scale_median, scale_mean, scale_count,
    rpe_trans (m), rpe_rot (deg), ate (m)."""
    s = scale_ratio(pred, true, min_motion)
    r = rpe(pred, true)
    return {"scale_median": s["median"], "scale_mean": s["mean"], "scale_count": s["count"],
            "rpe_trans": r["trans"], "rpe_rot": r["rot"], "ate": ate(pred, true)}


METRIC_KEYS = ("scale_median", "scale_mean", "rpe_trans", "rpe_rot", "ate")


def evaluate_scene_poses(entries, min_motion=0.05):
    """Pose metrics per scene and their mean over scenes, from per-sample motions gathered during evaluation.

    entries: iterable of (scene, token, pred (4, 4), true (4, 4)), motions current -> next, each scene's samples
    consecutive keyframes in temporal order (RPE and the scale ratio do not depend on the order, ATE does).
    Pairs whose true motion is the identity to 1e-6 (the dataset's stand-in for a missing next frame) are skipped.
    Returns dict(scenes: {scene: metrics}, mean: {key: float} over scenes (NaN-aware), table: markdown str).
    """
    by_scene = {}
    for scene, _, pred, true in entries:
        true = np.asarray(true, dtype=np.float64)
        if not np.allclose(true, np.eye(4), rtol=0, atol=1e-6):  # inv(E) @ E of float poses is not exactly I
            by_scene.setdefault(scene, ([], []))
            by_scene[scene][0].append(pred)
            by_scene[scene][1].append(true)
    if not by_scene:
        raise ValueError("evaluate_scene_poses got no pair with a next frame")
    scenes = {s: pose_metrics(np.stack(p), np.stack(t), min_motion) for s, (p, t) in by_scene.items()}
    mean = {}
    for k in METRIC_KEYS:
        vals = np.array([m[k] for m in scenes.values()])
        mean[k] = float(np.nanmean(vals)) if np.isfinite(vals).any() else float("nan")
    head = ("| scene | pairs | scale median | scale mean | RPE t (m) | RPE r (deg) | ATE (m) |\n"
            "|---|---|---|---|---|---|---|\n")
    rows = [f"| {s} | {len(by_scene[s][0])} | " + " | ".join(f"{m[k]:.3f}" for k in METRIC_KEYS) + " |"
            for s, m in scenes.items()]
    rows.append("| mean | " + str(sum(len(p) for p, _ in by_scene.values())) + " | "
                + " | ".join(f"{mean[k]:.3f}" for k in METRIC_KEYS) + " |")
    return {"scenes": scenes, "mean": mean, "table": head + "\n".join(rows)}


def per_street(pose_scenes=None, depth_records=()):
    """One row per scene (street) of what stage 1 gets right there: the scale of its depth alone and of its motion.

    pose_scenes: ``evaluate_scene_poses(...)["scenes"]`` or None. depth_records: iterable of (scene, per camera
    None or (abs_rel, scale)) per frame, as ``DepthEvaluator.update`` returns them. Per scene: ``depth_scale`` =
    median over its images of each image's median pred / gt (1 = metric; no pose involved), ``abs_rel`` = mean
    over cameras of the per-camera mean over frames (the protocol of ``utils.metrics``), ``depth_frames``, and the
    pose metrics of ``pose_metrics``. Returns dict(streets: {scene: {...}}, table: markdown str).
    """
    streets = {}
    for scene, cams in depth_records:
        d = streets.setdefault(scene, {"_cams": {}, "_scales": [], "depth_frames": 0})
        d["depth_frames"] += 1
        for c, v in enumerate(cams):
            if v is not None:
                d["_cams"].setdefault(c, []).append(v[0])
                d["_scales"].append(v[1])
    for d in streets.values():
        cams, scales = d.pop("_cams"), d.pop("_scales")
        d["abs_rel"] = float(np.mean([np.mean(v) for v in cams.values()])) if cams else float("nan")
        d["depth_scale"] = float(np.median(scales)) if scales else float("nan")
    for scene, m in (pose_scenes or {}).items():
        streets.setdefault(scene, {}).update(m)
    keys = ("depth_scale", "abs_rel", "scale_median", "rpe_trans", "rpe_rot", "ate")
    head = ("| street | depth scale (depth alone) | depth AbsRel | motion scale | RPE t (m) | RPE r (deg) | ATE (m) |\n"
            "|---|---|---|---|---|---|---|\n")
    rows = [f"| {s} | " + " | ".join(f"{m[k]:.3f}" if k in m else "-" for k in keys) + " |"
            for s, m in sorted(streets.items())]
    return {"streets": streets, "table": head + "\n".join(rows)}
