"""How far the depth-spread term's sum_i w_i z_i^2 was off under --amp bf16 before it was computed in float32
(docs/results/speed_notes.md).

    python -m tools.diagnostics.zsq_precision   # CPU, about a minute: the benchmark street, torch rasteriser

The old render computed each Gaussian's camera depth z with a matmul inside autocast (bf16 under --amp bf16) and
stored z^2 in the features' bf16; rasterize(zsq=...) now does both in float32. Here the benchmark's street
(tools/bench/scene.py, 200 x 200 x 16 voxels, opacity 1 - softmax) is rendered into the rig's 6 cameras at 45 x 80
both ways; printed: the mean depth-spread term and, on opaque pixels (alpha > 0.9), the median Var(z) and the
median error of the old Var(z).
"""
import torch

from networks.gsv_loss import depth_spread
from networks.occ_net import VoxelGrid
from networks.voxel_gaussians import voxels_to_gaussians
from options import parse_args
from tools.bench.scene import rig_cameras, scene_labels, scene_logits
from utils.rasterizer import rasterize


def main(grid=(16, 200, 200), size=(45, 80)):
    (Z, X, Y), (h, w) = grid, size
    logits, _ = scene_logits(scene_labels(X, Y, Z))
    centres = VoxelGrid((X, Y, Z), [-40, 40, -40, 40, -1, 5.4]).centres()
    opt = parse_args(["--stage", "gsv", "--pose", "gt", "--gs_scale", "0.15", "--grid_size", str(X), str(Y), str(Z),
                      "--opacity", "softmax", "--contracted", "false", "--encoder_weights", "none"])
    viewmats, Ks, _ = rig_cameras(h, w, "cpu")
    g = voxels_to_gaussians(logits[None], centres, opt, None, viewmats[None], 0.1)[0]
    args = (g["means"], g["quats"], g["scales"], g["opacities"])
    now = rasterize(*args, g["features"], viewmats, Ks, w, h, backend="torch", zsq="per_camera")
    z = (g["means"].bfloat16() @ viewmats[:, 2, :3].t().bfloat16() + viewmats[:, 2, 3].bfloat16()).t()  # the old z
    old_feats = torch.cat([g["features"].bfloat16().expand(len(z), -1, -1), (z * z)[..., None].bfloat16()], 2)
    old_zsq = rasterize(*args, old_feats.float(), viewmats, Ks, w, h, backend="torch")["features"][:, -1:]
    a, d = now["alpha"], now["depth"]
    mean = d / a.clamp(min=1e-4)
    var = {name: zsq / a.clamp(min=1e-4) - mean * mean for name, zsq in (("float32", now["zsq"]), ("bf16", old_zsq))}
    solid = a > 0.9
    print(f"{len(g['means'])} Gaussians; opaque pixels {float(solid.float().mean()):.2f}, their median depth "
          f"{float(mean[solid].median()):.2f} m")
    for name, zsq in (("float32 (now)", now["zsq"]), ("bf16 (before, under --amp bf16)", old_zsq)):
        v = var["float32" if name.startswith("float32") else "bf16"]
        err = (v - var["float32"])[solid].abs().median()
        print(f"{name}: depth-spread term {float(depth_spread(d, zsq, a)):.6f}; median Var(z) on opaque pixels "
              f"{float(v[solid].median()):.3f} m^2; median |Var(z) - float32's| {float(err):.3f} m^2")


if __name__ == "__main__":
    main()
