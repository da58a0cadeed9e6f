"""Generate a whole synthetic set: frames rendered in parallel worker processes, then the tables.

Every frame depends only on (seed, scene, frame index), so the output is identical for any number of workers.
"""
import functools
import multiprocessing as mp
from pathlib import Path

from PIL import Image
from tqdm import tqdm

from utils.constants import CAMS
from datasets.synthetic import writer
from datasets.synthetic.frame import render_frame
from datasets.synthetic.scene import SAMPLE_DT, make_scene

README = """Synthetic nuScenes-format set with Occ3D labels (GaussianOcc project, datasets/synthetic/).

Made by: tools/make_synthetic_nusc.py --seed {seed} --num_scenes {num_scenes} --frames_per_scene {frames}
  --img_size {h} {w} --val_scenes {val}
Load:    NuScenes('{version}', '<this folder>')   (any table folder name is accepted by nuscenes-devkit)

Contents
  {version}/                  the 13 nuScenes tables; one log + map per scene; key frames only, every
                              sample_data has its own ego_pose; sample_annotation boxes for objects within
                              50 m that a camera or the LiDAR sees (visibility = visible / crossed pixels)
  samples/CAM_*/*.jpg         {h} x {w} RGB, JPEG quality 95, intrinsics of the real nuScenes rig (scene-0916)
                              rescaled to this size (pixel centres at integer coordinates, OpenCV)
  samples/LIDAR_TOP/*.pcd.bin float32 N x 5 (x, y, z, intensity, ring) in the LIDAR_TOP frame; 32 beams over
                              -30..+10 deg, 0.4 deg azimuth step, 70 m range
  gts/<scene>/<sample_token>/labels.npz   Occ3D: semantics, mask_lidar, mask_camera (200, 200, 16) uint8,
                              0.4 m voxels over x, y in [-40, 40], z in [-1, 5.4] m of the current ego frame,
                              index [x, y, z] with x_idx = floor((x + 40) / 0.4); 17 = free
  sem/<sample_token>/<CAM>.png  uint8 class id per pixel (Occ3D ids), 255 = sky
  splits/train.txt, splits/val.txt  sample tokens; the last {val} scene(s) are the validation split
  maps/*.png                  driveable-surface masks, 0.1 m / pixel

World: a straight or gently curved street (road z = 0, sidewalks and terrain raised 0.15 m behind a kerb),
buildings, trees, hedges, parked and stopped cars, trucks, buses, pedestrians, barriers, cones,
bicycles, motorcycles. Everything is static. The ego drives in the right lane at 4-8 m/s; samples are
{dt} s apart (so 1-2 m of motion between frames). Ego z = 0 on the road surface, like nuScenes.
Occ3D rule: a voxel is occupied if any of its 3 x 3 x 3 sub-points is inside an object or below the ground
surface, with the majority class of those; so the ground fills the voxel layers from -1 m up to the layer
[-0.2, 0.2] m that contains the road surface. mask_lidar: voxels crossed by the LiDAR rays up to and including
the first occupied voxel. mask_camera: voxels some camera sees, i.e. in front of or in the layer of the first
occupied voxel along a line of sight (a depth-buffer test of 9 points per voxel against a 180 x 320 per camera
buffer of the first surface planes, plus the voxels the buffer's rays cross): dense, no gaps between rays.
"""


@functools.lru_cache(maxsize=4)
def _world(seed, scene, frames):
    return make_scene(seed, scene, frames)


def render_job(job):
    """Render frame k of a scene and write its files; returns the statistics the annotations need."""
    root, seed, scene, k, frames, hw = job
    world = _world(seed, scene, frames)
    out = render_frame(world, k, *hw)
    root = Path(root)
    tok = writer.sample_token(seed, scene, k)
    for c, img, sem in zip(CAMS, out["imgs"], out["sems"]):
        Image.fromarray(img).save(root / writer.data_filename(seed, scene, k, c), quality=95)
        (root / "sem" / tok).mkdir(parents=True, exist_ok=True)
        Image.fromarray(sem).save(root / "sem" / tok / f"{c}.png")
    out["points"].tofile(root / writer.data_filename(seed, scene, k, "LIDAR_TOP"))
    gt = root / "gts" / writer.scene_name(scene) / tok
    gt.mkdir(parents=True, exist_ok=True)
    writer.save_npz(gt / "labels.npz", **out["labels"])
    return scene, k, {key: out[key] for key in ("visible", "crossed", "lidar_pts")}


def generate(root, num_scenes=2, frames_per_scene=12, img_hw=(180, 320), seed=0, val_scenes=1, workers=1,
             progress=True):
    """Write the set to ``root``; returns the tables."""
    if not 0 <= val_scenes < num_scenes:
        raise ValueError(f"val_scenes must be in [0, num_scenes), got {val_scenes} of {num_scenes}")
    root = Path(root)
    for c in writer.CHANNELS:
        (root / "samples" / c).mkdir(parents=True, exist_ok=True)
    for d in ("maps", "splits"):
        (root / d).mkdir(parents=True, exist_ok=True)
    jobs = [(str(root), seed, i, k, frames_per_scene, tuple(img_hw))
            for i in range(num_scenes) for k in range(frames_per_scene)]
    stats = [[None] * frames_per_scene for _ in range(num_scenes)]
    bar = tqdm(total=len(jobs), desc="synthetic frames", disable=not progress)
    if workers > 1:
        with mp.get_context("fork").Pool(workers) as pool:
            for i, k, st in pool.imap_unordered(render_job, jobs):
                stats[i][k] = st
                bar.update()
    else:
        for job in jobs:
            i, k, st = render_job(job)
            stats[i][k] = st
            bar.update()
    bar.close()
    worlds = [_world(seed, i, frames_per_scene) for i in range(num_scenes)]
    for i, world in enumerate(worlds):
        writer.write_map(root / "maps" / f"{writer.token(seed, 'map', i)}.png", world)
    tables = writer.build_tables(seed, worlds, stats, img_hw)
    writer.write_tables(root, tables)
    n_train = num_scenes - val_scenes
    for name, scenes in (("train", range(n_train)), ("val", range(n_train, num_scenes))):
        toks = [writer.sample_token(seed, i, k) for i in scenes for k in range(frames_per_scene)]
        (root / "splits" / f"{name}.txt").write_text("".join(t + "\n" for t in toks))
    (root / "README.txt").write_text(README.format(seed=seed, num_scenes=num_scenes, frames=frames_per_scene,
                                                   h=img_hw[0], w=img_hw[1], val=val_scenes, dt=SAMPLE_DT,
                                                   version=writer.VERSION))
    return tables
