"""Pictures of a trained stage-2 model (or of the ground truth alone), frame by frame, without mayavi.

For each frame of the chosen scenes it writes ``<out_dir>/<scene>/<index>_<kind>.png``:
  inputs    the 6 current images (2x3 mosaic, nuScenes layout)
  depth     rendered depth (inverse-depth colours)            [with a checkpoint]
  sem       rendered semantics (Occ3D colours)                [with a checkpoint trained with semantics]
  occ       3D view of the predicted occupancy                [with a checkpoint]
  occ_gt    3D view of the Occ3D labels inside mask_camera    [when the dataset has --occ_root]
  frame     all of the above in one picture, each 3D view beside its top (BEV) view (what
            gen_scene_video.py strings together)

    python -m tools.visualize --ckpt logs/run/ckpt/last.pt --dataroot data/nuscenes --scenes scene-0916
    python -m tools.visualize --gt_only --dataroot data/synthetic --version v1.0-synthetic --occ_root gts

Options of this tool are listed below; every option of train.py (data paths, sizes...) is accepted as well.
With a checkpoint, the model options come from the checkpoint (which keeps no paths: give the data options here, e.g.
--config) and options given here override them.
"""
import argparse
import os

import cv2
import imageio.v2 as imageio
import torch

from datasets import build_dataset, collate
from utils.constants import FREE_ID
from utils.vis import (bev_image, compose, depth_mosaic, image_to_uint8, mosaic, put_label,
                       render_voxels, semantic_mosaic)


def vis_parser():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0], epilog=__doc__.split("\n\n", 1)[1],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--scenes", nargs="*", default=None, help="scene names to draw (default: all of the split)")
    p.add_argument("--max_frames", type=int, default=0, help="frames per scene at most (0 = all)")
    p.add_argument("--split", default="val", choices=["train", "val"], help="dataset split to read")
    p.add_argument("--gt_only", action="store_true", help="no checkpoint: inputs and ground-truth occupancy only")
    p.add_argument("--view_size", type=int, nargs=2, default=[360, 640], metavar=("H", "W"),
                   help="size of the 3D occupancy views")
    return p


def load_options(argv=None):
    """(visualisation args, full options); the model options come from the checkpoint unless --gt_only."""
    from options import parse_args
    from rebuild import saved_options
    from utils.checkpoint import load_checkpoint

    args, rest = vis_parser().parse_known_args(argv)
    if args.gt_only:
        return args, parse_args(rest), None
    cli = parse_args(rest)
    if not cli.ckpt:
        raise SystemExit("error: --ckpt is required (or --gt_only)")
    state = load_checkpoint(cli.ckpt)
    opt = saved_options(state, cli.ckpt, rest)
    if opt.stage != "gsv":
        raise SystemExit(f"error: {cli.ckpt} is a stage '{opt.stage}' checkpoint; visualize.py draws stage 2 (gsv)")
    return args, opt, state


def build_model(opt, state, device):
    from networks.gsv_model import GSVModel
    from utils.checkpoint import load_model_state

    model = GSVModel(opt)  # no criterion, no pose source: it renders, it does not train
    load_model_state(model, state, opt.ckpt)
    return model.to(device).eval()


def select_frames(dataset, scenes, max_frames):
    """{scene: [dataset indices]} in dataset order, restricted to ``scenes`` and ``max_frames`` per scene."""
    out = {}
    for i, meta in enumerate(dataset.samples):
        if scenes is None or meta["scene"] in scenes:
            out.setdefault(meta["scene"], []).append(i)
    missing = sorted(set(scenes or ()) - set(out))
    if missing:
        known = sorted({m["scene"] for m in dataset.samples})
        raise SystemExit(f"error: scenes {missing} are not in this split (it has {known[:20]})")
    return {s: idx[:max_frames] if max_frames else idx for s, idx in out.items()}


def gt_occupancy(item):
    """Occ3D labels with the voxels outside ``mask_camera`` set to free (what the cameras can see)."""
    occ = item["occ_semantics"].numpy().copy()
    occ[item["occ_mask_camera"].numpy() == 0] = FREE_ID
    return occ


def occupancy_row(view, occ, title):
    """The 3D view of a grid beside its top view (scaled to the same height), titled."""
    h = view.shape[0]
    bev = cv2.resize(bev_image(occ), (h, h), interpolation=cv2.INTER_NEAREST)
    return [put_label(view, title), bev]


@torch.no_grad()
def draw_frame(item, model, opt, view_hw):
    """Dict of pictures (H, W, 3) uint8 of one dataset item."""
    h, w = opt.render_size
    small = torch.nn.functional.interpolate(item["imgs"][1], (h, w), mode="area")
    pics = {"inputs": mosaic([image_to_uint8(im) for im in small], labels=True)}
    occ_rows = []
    if model is not None:
        batch = {k: v.to(next(model.parameters()).device) for k, v in collate([item]).items()
                 if isinstance(v, torch.Tensor)}
        r = model.render(batch)
        pics["depth"] = depth_mosaic(r["depth"][0, :, 0])
        if r["sem"].shape[2] > 1:
            pics["sem"] = semantic_mosaic(r["sem"][0], r["alpha"][0])
        occ = model.readout(r, batch["cam2ego"])["occupancy"][0].cpu().numpy()
        pics["occ"] = render_voxels(occ, view_hw[1], view_hw[0])
        occ_rows.append(occupancy_row(pics["occ"], occ, "prediction"))
    if "occ_semantics" in item:
        occ = gt_occupancy(item)
        pics["occ_gt"] = render_voxels(occ, view_hw[1], view_hw[0])
        occ_rows.append(occupancy_row(pics["occ_gt"], occ, "ground truth (camera-visible voxels)"))
    rows = [[pics[k]] for k in ("inputs", "depth", "sem") if k in pics]
    pics["frame"] = compose(rows + occ_rows)
    return pics


def main(argv=None):
    """Bad input (options, checkpoint, data) ends with one ``error:`` line."""
    from utils.errors import UserError, message
    try:
        draw(*load_options(argv))
    except UserError as e:
        raise SystemExit(f"error: {message(e)}") from None


def draw(args, opt, state):
    auto = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(auto if opt.device == "auto" else opt.device)
    model = None if args.gt_only else build_model(opt, state, device)
    dataset = build_dataset(opt, args.split)
    out_dir = opt.out_dir or "vis"
    for scene, indices in select_frames(dataset, args.scenes, args.max_frames).items():
        os.makedirs(os.path.join(out_dir, scene), exist_ok=True)
        for n, i in enumerate(indices):
            for kind, img in draw_frame(dataset[i], model, opt, args.view_size).items():
                imageio.imwrite(os.path.join(out_dir, scene, f"{n:04d}_{kind}.png"), img)
        print(f"{scene}: {len(indices)} frames -> {os.path.join(out_dir, scene)}")


if __name__ == "__main__":
    main()
