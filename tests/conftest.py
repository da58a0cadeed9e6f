"""Shared test fixtures: paths to the real sensor data in ../shared/fixtures (tests skip when absent)."""
import os
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
FIXTURES = Path(os.environ.get("GSOCC_FIXTURES", REPO.parent / "shared" / "fixtures"))


def _fixture(name):
    p = FIXTURES / name
    if not p.exists():
        pytest.skip(f"fixture {p} not present")
    return p


@pytest.fixture(scope="session")
def nusc_root():
    """Real nuScenes scene-0916 (v1.0-mini layout, keyframes only)."""
    return _fixture("nuscenes-scene-0916")


@pytest.fixture(scope="session")
def ddad_root():
    """Real DDAD scene in the DGP format."""
    return _fixture("ddad-scene")


@pytest.fixture(scope="session")
def occ3d_label():
    """One real Occ3D-nuScenes labels.npz."""
    d = _fixture("occ3d-sample")
    return next(d.glob("*/labels.npz"))


@pytest.fixture(scope="module")
def one_thread():
    """Small tensors on a shared 2-core machine: one thread is several times faster than two fighting."""
    import torch
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


SYNTH_SEED, SYNTH_FRAMES, SYNTH_HW, SYNTH_SWEEPS = 3, 3, (90, 160), 5


@pytest.fixture(scope="session")
def synth_root(tmp_path_factory):
    """A generated synthetic set: 1 training + 1 validation scene of 3 samples (keyframes) at 90 x 160, with 5
    camera sweeps between keyframes (shared by the synthetic-data tests)."""
    from datasets.synthetic.generate import generate
    out = tmp_path_factory.mktemp("synth")
    generate(out, num_scenes=2, frames_per_scene=SYNTH_FRAMES, img_hw=SYNTH_HW, seed=SYNTH_SEED, val_scenes=1,
             progress=False, sweeps_per_keyframe=SYNTH_SWEEPS)
    return out
