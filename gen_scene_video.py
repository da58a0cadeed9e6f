"""String the pictures of tools/visualize.py for one scene into an mp4 (OpenCV, mp4v) and a gif.

    python gen_scene_video.py vis/scene-0916 --fps 4            # the combined frames (<index>_frame.png)
    python gen_scene_video.py vis/scene-0916 --fps 4 --sem_only  # the 3D semantic occupancy views only
                                                                 # (predicted, else ground truth)

Writes ``<scene_dir>/<scene>.mp4`` and ``<scene_dir>/<scene>.gif`` (``_occ`` added with --sem_only).
"""
import argparse
import glob
import os

import cv2
import numpy as np
from PIL import Image


def frame_files(scene_dir, kinds):
    """Sorted ``<index>_<kind>.png`` files of a scene folder, for the first of ``kinds`` that has any."""
    for kind in kinds:
        files = sorted(glob.glob(os.path.join(scene_dir, f"[0-9]*_{kind}.png")))
        if files:
            return files
    names = " or ".join(f"<index>_{k}.png" for k in kinds)
    raise FileNotFoundError(f"no pictures {names} in {scene_dir}: run tools/visualize.py first")


def read_frames(files):
    """RGB uint8 frames, all padded / cropped to the size of the first one, with even sides (for the codec)."""
    frames = [np.asarray(Image.open(f).convert("RGB")) for f in files]
    h, w = frames[0].shape[:2]
    h, w = h - h % 2, w - w % 2
    out = []
    for fr in frames:
        canvas = np.full((h, w, 3), 255, np.uint8)
        canvas[: min(h, fr.shape[0]), : min(w, fr.shape[1])] = fr[:h, :w]
        out.append(canvas)
    return out


def write_mp4(frames, path, fps):
    writer = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*"mp4v"), fps, frames[0].shape[1::-1])
    if not writer.isOpened():
        raise RuntimeError(f"OpenCV cannot write {path} with the mp4v codec")
    for fr in frames:
        writer.write(cv2.cvtColor(fr, cv2.COLOR_RGB2BGR))
    writer.release()


def write_gif(frames, path, fps, max_width=640):
    """Animated gif, scaled down to ``max_width`` to stay small."""
    scale = min(1.0, max_width / frames[0].shape[1])
    size = (round(frames[0].shape[1] * scale), round(frames[0].shape[0] * scale))
    images = [Image.fromarray(fr).resize(size, Image.BILINEAR) for fr in frames]
    images[0].save(path, save_all=True, append_images=images[1:], duration=round(1000 / fps), loop=0)


def make_videos(scene_dir, fps=4.0, sem_only=False):
    """Write the mp4 and gif of a scene folder; returns their paths."""
    kinds = ("occ", "occ_gt") if sem_only else ("frame",)  # prediction, else ground truth (--gt_only runs)
    frames = read_frames(frame_files(scene_dir, kinds))
    name = os.path.basename(os.path.normpath(scene_dir)) + ("_occ" if sem_only else "")
    mp4, gif = (os.path.join(scene_dir, name + ext) for ext in (".mp4", ".gif"))
    write_mp4(frames, mp4, fps)
    write_gif(frames, gif, fps)
    return mp4, gif


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("scene_dir", help="a scene folder written by tools/visualize.py")
    p.add_argument("--fps", type=float, default=4.0, help="frames per second (nuScenes keyframes come at 2 Hz)")
    p.add_argument("--sem_only", action="store_true", help="only the 3D semantic occupancy views (<index>_occ.png)")
    args = p.parse_args(argv)
    for path in make_videos(args.scene_dir, args.fps, args.sem_only):
        print("wrote", path)


if __name__ == "__main__":
    main()
