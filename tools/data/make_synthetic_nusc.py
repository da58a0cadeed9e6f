"""Write the synthetic nuScenes-format set with Occ3D labels (the project's built-in dataset).

Example: python -m tools.data.make_synthetic_nusc --out data/synthetic --num_scenes 2 --frames_per_scene 12 \
             --img_size 180 320 --seed 0 --val_scenes 1 --workers 2
Then: NuScenes('v1.0-synthetic', 'data/synthetic'); see <out>/README.txt for the layout. Like nuScenes, samples
(keyframes, with LiDAR and Occ3D labels) are 0.5 s apart and the cameras run at 12 Hz in between (5 sweeps per
keyframe; --sweeps_per_keyframe 0 writes keyframes only and renders 6x fewer images).
"""
import argparse
import os
import time

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):  # one thread per worker process
    os.environ.setdefault(_var, "1")

from datasets.synthetic.generate import generate  # noqa: E402
from datasets.synthetic.preview import save_preview  # noqa: E402


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, help="output dataroot")
    p.add_argument("--num_scenes", type=int, default=2, help="number of scenes (each its own street)")
    p.add_argument("--frames_per_scene", type=int, default=12, help="samples (keyframes) per scene, 0.5 s apart")
    p.add_argument("--sweeps_per_keyframe", type=int, default=5,
                   help="camera sweeps between two keyframes, linked by prev / next (5: 12 Hz as nuScenes; "
                        "0: keyframes only)")
    p.add_argument("--img_size", type=int, nargs=2, default=[180, 320], metavar=("H", "W"), help="image size")
    p.add_argument("--seed", type=int, default=0, help="random seed (same seed: identical files)")
    p.add_argument("--val_scenes", type=int, default=1, help="the last V scenes form the validation split")
    p.add_argument("--workers", type=int, default=os.cpu_count(), help="worker processes (frames in parallel)")
    p.add_argument("--preview", type=str, default=None,
                   help="also write a picture of the first sample (6 cameras, semantics, Occ3D BEV) to this PNG")
    a = p.parse_args(argv)
    t0 = time.time()
    generate(a.out, a.num_scenes, a.frames_per_scene, tuple(a.img_size), a.seed, a.val_scenes, a.workers,
             sweeps_per_keyframe=a.sweeps_per_keyframe)
    n = a.num_scenes * a.frames_per_scene
    sweeps = a.num_scenes * (a.frames_per_scene - 1) * a.sweeps_per_keyframe
    print(f"wrote {n} samples and {sweeps} camera sweeps to {a.out} in {time.time() - t0:.1f} s "
          f"({(time.time() - t0) / n:.2f} s / sample with {a.workers} workers)")
    if a.preview:
        save_preview(a.out, a.preview)
        print(f"preview: {a.preview}")


if __name__ == "__main__":
    main()
