"""--stage1_poses: the stage-1 motion exported once (tools/export_stage1_poses.py) is the motion stage 2 computes
itself from --stage1_ckpt, trains without the checkpoint, and a file that does not fit the run stops with its name."""
from pathlib import Path

import pytest
import torch

import train as train_entry
from datasets import EVAL_ONLY_KEYS, build_dataset, collate
from networks.gsp_model import GSPModel
from networks.pose_source import Stage1Poses, load_stage1_poses
from options import parse_args
from rebuild import load_stage1
from tools.export_stage1_poses import export
from tools.export_stage1_poses import main as export_main
from trainer import check_options
from utils.batch import to_device
from utils.checkpoint import save_checkpoint
from utils.errors import ConfigError

pytestmark = pytest.mark.usefixtures("one_thread")  # (tests/conftest.py)

GSV = ["--stage", "gsv", "--pose", "stage1", "--input_size", 32, 64, "--render_size", 16, 32, "--grid_size", 8, 8, 4,
       "--contracted", "false", "--encoder_layers", 18, "--encoder_weights", "none", "--image_neck", "fpn",
       "--feat_stride", 8, "--occ_decoder", "residual", "--decoder_blocks", 1, "--feat_dim", 8, "--voxel_feat_dim", 4,
       "--raster_backend", "torch", "--device", "cpu", "--num_workers", 0]


@pytest.fixture(scope="module")
def stage1(tmp_path_factory):
    """A stage-1 checkpoint whose pose net moves (its weights perturbed: an untrained one predicts the identity)."""
    d = tmp_path_factory.mktemp("stage1")
    opt = parse_args(["--stage", "gsp", "--gsp_pretrained", "false", "--raster_backend", "torch", "--gsp_pose", "net",
                      "--input_size", "64", "96"])
    torch.manual_seed(0)
    model = GSPModel(opt)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.startswith("pose"):
                p.add_(0.05 * torch.randn_like(p))
    save_checkpoint({"model": model.state_dict(), "opt": vars(opt)}, str(d / "gsp.pt"))
    return d / "gsp.pt"


def argv(synth_root, *extra):
    data = ["--dataroot", synth_root, "--version", "v1.0-synthetic", "--train_split",
            Path(synth_root) / "splits" / "train.txt", "--val_split", Path(synth_root) / "splits" / "val.txt"]
    return [str(a) for a in [*GSV, *data, *extra]]


def first_batch(opt, split="train"):
    ds = build_dataset(opt, split, eval_labels=False, uint8_images=True)
    return to_device(collate([ds[0]]), torch.device("cpu"), skip=EVAL_ONLY_KEYS)


def test_exported_motion_is_the_motion_stage_2_computes(synth_root, stage1, tmp_path):
    out = tmp_path / "poses.pt"
    opt = parse_args(argv(synth_root, "--stage1_ckpt", stage1))
    poses = export(opt, ["train"], str(out), device="cpu", progress=False)
    batch = first_batch(opt)
    assert set(poses) == set(load_stage1_poses(str(out), opt)) and batch["token"][0] in poses
    live = Stage1Poses(str(stage1), load_stage1)(batch)
    from_file = Stage1Poses(None, load_stage1, poses=load_stage1_poses(str(out), opt), poses_path=str(out))(batch)
    torch.testing.assert_close(from_file, live, rtol=0, atol=1e-5)  # exported in batches of 8, live one by one
    assert from_file.shape == (1, 2, 6, 4, 4)
    assert (from_file[..., :3, 3] - torch.eye(4)[:3, 3]).abs().max() > 1e-3  # a real motion, not the identity
    # a sample the file lacks (the held-out split was not exported) and no checkpoint: stops naming the file
    with pytest.raises(ValueError, match="has no motion for sample"):
        Stage1Poses(None, load_stage1, poses=load_stage1_poses(str(out), opt), poses_path=str(out))(
            first_batch(opt, "val"))


def test_stage_2_trains_from_the_file_without_the_checkpoint(synth_root, stage1, tmp_path):
    out = tmp_path / "poses.pt"
    export_main(argv(synth_root, "--stage1_ckpt", stage1, "--out", out))
    train_entry.main(argv(synth_root, "--stage1_poses", out, "--exp_name", "s2", "--log_dir", tmp_path,
                          "--max_steps", 2, "--log_every", 1, "--image_every", 0, "--val_every", -1,
                          "--lr_warmup", 0, "--num_epochs", 2))
    assert (tmp_path / "s2" / "ckpt" / "last.pt").is_file()
    assert len((tmp_path / "s2" / "train_log.jsonl").read_text().splitlines()) >= 2


def test_a_file_that_does_not_fit_the_run_stops_before_training(synth_root, stage1, tmp_path):
    out = tmp_path / "poses.pt"
    export_main(argv(synth_root, "--stage1_ckpt", stage1, "--out", out))
    with pytest.raises(ConfigError, match="exported with --near_stride 0"):  # other neighbours than the file's
        check_options(parse_args(argv(synth_root, "--stage1_poses", out, "--near_stride", 1)))
    bad = tmp_path / "bad.pt"
    torch.save({"poses": {}}, bad)
    with pytest.raises(ConfigError, match="bad.pt is not a stage-1 poses file"):
        check_options(parse_args(argv(synth_root, "--stage1_poses", bad)))
    with pytest.raises(ConfigError, match="nowhere.pt not found"):
        check_options(parse_args(argv(synth_root, "--stage1_poses", tmp_path / "nowhere.pt")))
    with pytest.raises(SystemExit, match="random stride"):
        export_main(argv(synth_root, "--stage1_ckpt", stage1, "--out", out, "--frame_stride", 1, 2))


def test_aligned_motion_of_a_batch_is_each_samples_own(synth_root, stage1, tmp_path):
    """--gsp_pose net_solve (the motion by image alignment), as the export runs it in batches: one solve over two
    samples gives each the motion it gets alone (the solve's parameters and error are per sample)."""
    state = torch.load(stage1, weights_only=False)
    state["opt"]["gsp_pose"] = "net_solve"
    save_checkpoint(state, str(tmp_path / "gsp-solve.pt"))
    model = load_stage1(str(tmp_path / "gsp-solve.pt"))
    opt = parse_args(argv(synth_root))
    items = [build_dataset(opt, split, eval_labels=False)[0] for split in ("train", "val")]
    alone = torch.cat([model.predict_pose(collate([it])) for it in items])
    together = model.predict_pose(collate(items))
    assert (alone[..., :3, 3].norm(dim=-1) > 1e-2).sum() >= 3  # real motions (a scene's first frame has no previous)
    assert (alone[0] - alone[1]).abs().max() > 1e-2  # two different motions
    torch.testing.assert_close(together, alone, rtol=0, atol=2e-4)
