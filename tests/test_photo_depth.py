"""tools/diagnostics/photo_depth: winner-take-all photometric matching with exact motion finds the true depth where
the texture allows it (facades), and not with a wrong motion."""
import torch

from tools.diagnostics import photo_depth as pd


def test_textured_facades_resolve_at_true_depth():
    res = pd.run(seed=0, scenes=[12], keyframes=[2], size=(45, 80), spacing=0.5, boxes=(1, 5))
    for box in ("box1", "box5"):
        assert res[box]["all"]["pixels"] > 5000
        assert res[box]["manmade"]["median"] <= 0.03, res[box]["manmade"]
    assert res["box5"]["manmade"]["within_5pct"] > 0.6
    both = pd.run(seed=0, scenes=[12], keyframes=[2], size=(45, 80), spacing=[1 / 12, 0.5], boxes=(5,))
    assert both["box5"]["all"]["pixels"] >= res["box5"]["all"]["pixels"]  # more neighbours see at least as much
    assert both["box5"]["manmade"]["median"] <= 0.03


def test_wrong_motion_does_not_resolve():
    h, w = 45, 80
    K, c2e = pd.rig_tensors(h, w)
    world = pd.make_scene(0, 12, 8)
    poses = world.ego_pose([0.5, 1.0, 1.5])
    img, depth, cls = pd.render_rgbd(world, poses[1], h, w, with_cls=True)
    srcs = [pd.render_rgbd(world, poses[k], h, w)[0] for k in (0, 2)]
    right = [pd.ego_motion(poses, 1, 0), pd.ego_motion(poses, 1, 2)]
    wrong = [torch.linalg.inv(T) for T in right]  # the motions reversed
    keep = (depth[:, 0] < pd.MAX_RANGE * 0.99) & (cls < 255)
    err = {}
    for name, motions in (("right", right), ("wrong", wrong)):
        s, ok = pd.winner_take_all(img, depth, srcs, motions, K, c2e, boxes=(5,))
        m = keep & ok[:, 0]
        err[name] = float((s[5][:, 0][m] - 1).abs().median())
    assert err["right"] < 0.03 and err["wrong"] > 3 * err["right"] + 0.02, err
