"""Generate a whole synthetic set: camera frames (keyframes with their labels, and sweeps) rendered in parallel
worker processes, then the tables.

Every frame depends only on (seed, scene, frame index, sweeps per keyframe), so the output is identical for any
number of workers.
"""
import functools
import multiprocessing as mp
from pathlib import Path

from PIL import Image
from tqdm import tqdm

from utils.constants import CAMS
from datasets.synthetic import writer
from datasets.synthetic.frame import occ3d_labels, render_frame
from datasets.synthetic.scene import SAMPLE_DT, make_scene

README = """Synthetic nuScenes-format set with Occ3D labels (GaussianOcc project, datasets/synthetic/).

Made by: tools/data/make_synthetic_nusc.py --seed {seed} --num_scenes {num_scenes} --frames_per_scene {frames}
  --img_size {h} {w} --val_scenes {val} --sweeps_per_keyframe {sweeps}
Load:    NuScenes('{version}', '<this folder>')   (any table folder name is accepted by nuscenes-devkit)

Contents
  {version}/                  the 13 nuScenes tables; one log + map per scene; {frames} samples (keyframes) per
                              scene {dt} s apart, with {sweeps} camera sweeps between two keyframes (camera frames
                              {cam_dt:.4f} s apart, linked by prev / next; is_key_frame on one frame in {every}); every
                              sample_data has its own ego_pose; LiDAR at the keyframes only; sample_annotation
                              boxes for objects within 50 m that a camera or the LiDAR sees
  samples/CAM_*/*.jpg         keyframe images, {h} x {w} RGB, JPEG quality 95, intrinsics of the real nuScenes rig
                              (scene-0916) rescaled to this size (pixel centres at integer coordinates, OpenCV)
  sweeps/CAM_*/*.jpg          the camera sweeps between keyframes (same format)
  samples/LIDAR_TOP/*.pcd.bin float32 N x 5 (x, y, z, intensity, ring) in the LIDAR_TOP frame; 32 beams over
                              -30..+10 deg, 0.4 deg azimuth step, 70 m range
  gts/<scene>/<sample_token>/labels.npz   Occ3D: semantics, mask_lidar, mask_camera (200, 200, 16) uint8,
                              0.4 m voxels over x, y in [-40, 40] m of the current ego frame, index [x, y, z]
                              with x_idx = floor((x + 40) / 0.4); 17 = free. Vertical convention of the real
                              Occ3D-nuScenes labels: layer 0 holds the road surface (ego z = 0), layer k spans
                              z = 0.4 k +- 0.2 m (the documented range [-1, 5.4] m would put it in layer 2)
  sem/<sample_token>/<CAM>.png  uint8 class id per pixel (Occ3D ids), 255 = sky (keyframes only)
  splits/train.txt, splits/val.txt  sample tokens; the last {val} scene(s) are the validation split
  maps/*.png                  driveable-surface masks, 0.1 m / pixel

World: a straight or gently curved street (road z = 0, sidewalks and terrain raised 0.15 m behind a kerb),
buildings, trees, hedges, parked and stopped cars, trucks, buses, pedestrians, barriers, cones,
bicycles, motorcycles. Everything is static. The ego drives in the right lane at 4-8 m/s. Ego z = 0 on the road.
Occ3D rules (as documented by Occ3D): a voxel is occupied when a surface passes through it (it holds LiDAR /
camera hits) or it lies inside an object; its class is the object's (objects before the ground). mask_lidar:
every voxel a LiDAR beam passes through or ends in, for beams to the RETURNED points of the LiDAR sweeps of all
the scene's keyframes whose sensor lies over the grid (accumulated, as Occ3D accumulates a scene's sweeps).
mask_camera: the voxels of mask_lidar that a camera sees, i.e. on a line of sight up to and including the first
occupied voxel, for lines of sight that end on an occupied voxel (no sky): a depth-buffer test of 9 points per
voxel against a 180 x 320 buffer per camera of the first surface planes, plus the voxels the buffer's rays cross.
"""


@functools.lru_cache(maxsize=4)
def _world(seed, scene, frames):
    return make_scene(seed, scene, frames)


def render_job(job):
    """Render camera frame f of a scene and write its files (a keyframe also writes its 2D semantics, LiDAR and
    Occ3D labels); returns (scene, f, the statistics the annotations need, or None for a sweep)."""
    root, seed, scene, f, frames, sweeps, hw = job
    world = _world(seed, scene, frames)
    k, j = divmod(f, sweeps + 1)
    is_key = j == 0
    out = render_frame(world, world.ego_pose([writer.frame_time(f, sweeps)])[0], *hw, keyframe=is_key)
    root = Path(root)
    tok = writer.sample_token(seed, scene, k)
    for i, c in enumerate(CAMS):
        Image.fromarray(out["imgs"][i]).save(root / writer.data_filename(seed, scene, f, c, sweeps), quality=95)
        if is_key:
            (root / "sem" / tok).mkdir(parents=True, exist_ok=True)
            Image.fromarray(out["sems"][i]).save(root / "sem" / tok / f"{c}.png")
    if not is_key:
        return scene, f, None
    out["points"].tofile(root / writer.data_filename(seed, scene, f, "LIDAR_TOP", sweeps))
    gt = root / "gts" / writer.scene_name(scene) / tok
    gt.mkdir(parents=True, exist_ok=True)
    writer.save_npz(gt / "labels.npz", **occ3d_labels(world, k))
    return scene, f, {key: out[key] for key in ("visible", "crossed", "lidar_pts")}


def generate(root, num_scenes=2, frames_per_scene=12, img_hw=(180, 320), seed=0, val_scenes=1, workers=1,
             progress=True, sweeps_per_keyframe=5):
    """Write the set to ``root``; returns the tables. ``frames_per_scene`` samples (keyframes) per scene, with
    ``sweeps_per_keyframe`` camera sweeps between two of them (5: 12 Hz cameras as nuScenes; 0: keyframes only)."""
    if not 0 <= val_scenes < num_scenes:
        raise ValueError(f"val_scenes must be in [0, num_scenes), got {val_scenes} of {num_scenes}")
    if frames_per_scene < 1 or sweeps_per_keyframe < 0:
        raise ValueError(f"need frames_per_scene >= 1 and sweeps_per_keyframe >= 0, got {frames_per_scene} and "
                         f"{sweeps_per_keyframe}")
    root = Path(root)
    for folder in ("samples", "sweeps"):
        for c in writer.CHANNELS:
            if folder == "samples" or (c != "LIDAR_TOP" and sweeps_per_keyframe):
                (root / folder / c).mkdir(parents=True, exist_ok=True)
    for d in ("maps", "splits"):
        (root / d).mkdir(parents=True, exist_ok=True)
    n_frames = (frames_per_scene - 1) * (sweeps_per_keyframe + 1) + 1
    # keyframes first: they take longest (labels), so the pool ends on short jobs
    jobs = sorted(((str(root), seed, i, f, frames_per_scene, sweeps_per_keyframe, tuple(img_hw))
                   for i in range(num_scenes) for f in range(n_frames)),
                  key=lambda j: (j[3] % (sweeps_per_keyframe + 1) != 0, j[2], j[3]))
    stats = [[None] * frames_per_scene for _ in range(num_scenes)]
    bar = tqdm(total=len(jobs), desc="synthetic frames", disable=not progress)
    if workers > 1:
        with mp.get_context("fork").Pool(workers) as pool:
            results = pool.imap_unordered(render_job, jobs)
            for i, f, st in results:
                if st is not None:
                    stats[i][f // (sweeps_per_keyframe + 1)] = st
                bar.update()
    else:
        for job in jobs:
            i, f, st = render_job(job)
            if st is not None:
                stats[i][f // (sweeps_per_keyframe + 1)] = st
            bar.update()
    bar.close()
    worlds = [_world(seed, i, frames_per_scene) for i in range(num_scenes)]
    for i, world in enumerate(worlds):
        writer.write_map(root / "maps" / f"{writer.token(seed, 'map', i)}.png", world)
    tables = writer.build_tables(seed, worlds, stats, img_hw, sweeps_per_keyframe)
    writer.write_tables(root, tables)
    n_train = num_scenes - val_scenes
    for name, scenes in (("train", range(n_train)), ("val", range(n_train, num_scenes))):
        toks = [writer.sample_token(seed, i, k) for i in scenes for k in range(frames_per_scene)]
        (root / "splits" / f"{name}.txt").write_text("".join(t + "\n" for t in toks))
    (root / "README.txt").write_text(README.format(
        seed=seed, num_scenes=num_scenes, frames=frames_per_scene, h=img_hw[0], w=img_hw[1], val=val_scenes,
        dt=SAMPLE_DT, sweeps=sweeps_per_keyframe, cam_dt=SAMPLE_DT / (sweeps_per_keyframe + 1),
        every=sweeps_per_keyframe + 1, version=writer.VERSION))
    return tables
