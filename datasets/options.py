"""Options of the data layer (argument group "data")."""
from utils.cli import at_least, str2bool

OPTION_RANGES = {"input_size": at_least(16), "render_size": at_least(4)}


def add_args(parser):
    g = parser.add_argument_group("data")
    g.add_argument("--dataset", type=str, default="nuscenes", choices=["nuscenes", "ddad"],
                   help="dataset format: nuscenes (also our synthetic data, written in the nuScenes format) or ddad")
    g.add_argument("--dataroot", type=str, metavar="PATH", default="data/nuscenes",
                   help="dataset root: nuScenes tables in <dataroot>/<version>/, images under <dataroot>/samples/")
    g.add_argument("--version", type=str, default="v1.0-trainval",
                   help="nuScenes table folder under dataroot: v1.0-trainval, v1.0-mini, v1.0-test or any custom "
                        "name such as v1.0-synthetic (nuscenes-devkit accepts any folder name)")
    g.add_argument("--train_split", type=str, metavar="PATH", default=None,
                   help="text file of training sample tokens, one per line, '#' comments (tools/data/make_split.py "
                        "writes them; a bare name is also looked up in datasets/splits/); unset: every sample")
    g.add_argument("--val_split", type=str, metavar="PATH", default=None,
                   help="text file of validation sample tokens, same format as --train_split; unset: every sample")
    g.add_argument("--input_size", type=int, nargs=2, default=[384, 640], metavar=("H", "W"),
                   help="network input image size, height width (intrinsics are rescaled to it)")
    g.add_argument("--render_size", type=int, nargs=2, default=[180, 320], metavar=("H", "W"),
                   help="size of the rendered views and of the 2D semantic labels, height width")
    g.add_argument("--adjacent", type=str, default="auto", choices=["auto", "keyframe", "sweep"],
                   help="temporal neighbours: the previous / next keyframe of each camera (2 Hz on nuScenes, 0.5 s) "
                        "or the directly adjacent camera sweep (12 Hz, ~0.08 s, as the authors' loader); auto: "
                        "sweeps when the tables list them and their files exist, else keyframes (logged)")
    g.add_argument("--frame_stride", type=int, nargs="+", default=[1], metavar="N",
                   help="temporal neighbours N steps away along each camera's chain (of sweeps or keyframes, see "
                        "--adjacent); LO HI: in training a stride drawn per sample in LO..HI (at evaluation LO). "
                        "Measured: it does not teach the stage-1 pose net to measure the motion, it then answers "
                        "the average one (docs/results/stage1_heldout.md); nuScenes format only")
    g.add_argument("--near_stride", type=int, default=0, metavar="N",
                   help="> 0: also the neighbours N steps away (N below --frame_stride) as two more frames, so that "
                        "stage 2's temporal loss takes the per-pixel minimum over 4 sources: e.g. --adjacent sweep "
                        "--frame_stride 6 --near_stride 1 = the keyframes 0.5 s away (precise far away) and the 12 Hz "
                        "sweeps (near objects that leave the keyframes' view; docs/results/photo_depth.md). Stage 1 "
                        "too: its pose source then also gives the near pair's motion (the pose net learns both "
                        "spacings); measured worse in stage 2 (the minimum settles on the near pair: "
                        "docs/results/runs/2026-12-03/occ-round8); 0 = off (the authors')")
    g.add_argument("--train_sweeps", type=str2bool, default=False,
                   help="training items centred on the camera sweeps between keyframes too, not only on the "
                        "keyframes (with sweeps as neighbours: 6x more images on nuScenes); they have no labels, so "
                        "stage 1 only (with --use_sem their 2D labels are all ignore)")
    g.add_argument("--require_adjacent", type=str2bool, default=True,
                   help="drop training samples that lack a previous or next frame (at validation, and in training "
                        "when off, a missing neighbour is replaced by the current frame)")
    g.add_argument("--use_sem", type=str2bool, default=False,
                   help="load 2D semantic pseudo-labels (format: --sem_format)")
    g.add_argument("--sem_format", type=str, default="png", choices=["png", "gsam_bin"],
                   help="png: <sem_root>/<token>/<CAM>.png, uint8 Occ3D ids, 255 ignore (this project); gsam_bin: "
                        "the release's Grounded-SAM files <sem_root>/<image path without .jpg>_mask.bin (their "
                        "sem_root: nuscenes_semantic), int8 ids mapped as theirs, sky -> ignore (see "
                        "datasets/pseudo_labels.py; tools/data/convert_gsam_labels.py converts them to png)")
    g.add_argument("--sem_root", type=str, metavar="PATH", default="sem",
                   help="folder of the 2D semantic labels (relative paths are resolved against dataroot)")
    g.add_argument("--occ_root", type=str, metavar="PATH", default=None,
                   help="Occ3D folder <occ_root>/<scene>/<token>/labels.npz (relative to dataroot unless "
                        "absolute); unset: no occupancy labels")
    g.add_argument("--occ_label_zmin", type=float, default=-0.2,
                   help="ego-frame height (metres) where Occ3D label layer 0 starts, for reading the predicted "
                        "volume out at the label voxels: -0.2 = the released Occ3D-nuScenes labels and the synthetic "
                        "ones (road surface in layer 0, docs/occ3d_convention.md); -1.0 = Occ3D's documented range, "
                        "as the GaussianOcc authors read out")
    g.add_argument("--depth_root", type=str, metavar="PATH", default=None,
                   help="LiDAR depth from tools/data/export_gt_depth_nusc.py, <depth_root>/<token>/<CAM>.npz (relative "
                        "to dataroot unless absolute); unset: no depth_gt")
    g.add_argument("--ddad_mask_dir", type=str, metavar="PATH", default=None,
                   help="DDAD only: folder of the per-camera self-occlusion masks (relative to dataroot unless "
                        "absolute)")


def trains_on_depth(opt):
    """Whether training reads the LiDAR depth (``depth_gt``) too: only for the stage-2 diagnostic --w_depth_oracle."""
    return getattr(opt, "w_depth_oracle", 0) > 0
