"""Which rasteriser runs: gsplat's CUDA kernels or the pure-PyTorch reference (``--raster_backend``).

gsplat 1.5.3 from PyPI ships CUDA sources: the first process that calls it JIT-compiles them (about 90 s, needs
nvcc) into torch's extension cache (``TORCH_EXTENSIONS_DIR``, default ~/.cache/torch_extensions). Two processes
that build at once break each other (gsplat deletes an unfinished build folder before it builds), so every
process here loads the kernels under one file lock: the first builds, the others wait, then load the result.
``tools/setup_env.sh`` does it once at set-up (``tools/gsplat_build.py``), before any training job starts.

``GSPLAT_KERNELS=<file>``: the module such a build made (``gsplat_cuda.so``, or the same gzipped, ``.so.gz``), taken
from a machine of the same torch, CUDA and GPU architecture (``python -m tools.gsplat_build --save <file>`` writes
it). It is loaded instead of building; when it does not load (another torch, CUDA or architecture), the kernels
build as usual and the reason is printed. For fleets of fresh machines, where the build is 90-160 s of every start.

Rules of ``resolve_backend``: ``torch`` always runs the reference; ``gsplat`` needs CUDA tensors and working
kernels; ``auto`` takes the reference on the CPU and gsplat on CUDA, and on CUDA without working gsplat it stops
with the reason and the fix instead of training 3-10x slower (pass ``--raster_backend torch`` to do that on
purpose). The choice of ``auto`` is printed once per process (rank 0).
"""
import contextlib
import fcntl
import gzip
import importlib.util
import os
import shutil
import sys
import time

from utils.errors import UserError

GSPLAT_VERSION = "1.5.3"  # the version this project checked against its reference (tools/diagnostics/check_gsplat.py)
FIX = (f"run `sh tools/setup_env.sh` (installs gsplat=={GSPLAT_VERSION} on a GPU machine and builds its kernels; "
       f"needs the CUDA toolkit's nvcc), or `pip install gsplat=={GSPLAT_VERSION}`; or pass --raster_backend torch "
       "to use the pure-PyTorch rasteriser (3-10x slower)")
_status = {}  # load_kernels -> (ok, detail), once per process
_announced = set()


def add_args(parser):
    g = parser.add_argument_group("rasteriser", "Gaussian splatting backend (utils/rasterizer.py)")
    g.add_argument("--raster_backend", type=str, default="auto", choices=["auto", "gsplat", "torch"],
                   help="auto: gsplat for CUDA tensors (an error with the fix when it cannot run there), the pure "
                        "PyTorch reference on the CPU; gsplat: CUDA only; torch: pure PyTorch on any device "
                        "(slow, exact)")


class BackendError(UserError, RuntimeError):
    """The asked-for rasteriser cannot run here (the message says why and what to do)."""


def extensions_root():
    """torch's extension cache (``TORCH_EXTENSIONS_DIR``, default ~/.cache/torch_extensions), where gsplat builds."""
    import torch.utils.cpp_extension
    return os.environ.get("TORCH_EXTENSIONS_DIR") or torch.utils.cpp_extension.get_default_build_root()


def build_lock_path():
    """The lock file every process takes while it loads (and maybe builds) gsplat's kernels."""
    return os.path.join(extensions_root(), "gsplat_build.lock")


@contextlib.contextmanager
def file_lock(path, waiting_message=None):
    """Exclusive advisory lock on ``path`` (created if missing) for the duration of the block."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "a") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if waiting_message:
                print(waiting_message, flush=True)
            fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def prebuilt_kernels_path():
    """The built gsplat module of a previous build: the default build folder's ``gsplat_cuda.so`` (None if missing)."""
    root = extensions_root()
    for d in sorted(os.listdir(root)) if os.path.isdir(root) else []:
        path = os.path.join(root, d, "gsplat_cuda", "gsplat_cuda.so")
        if os.path.isfile(path):
            return path
    return None


def use_prebuilt_kernels(path):
    """Load gsplat's kernels from ``path`` (``GSPLAT_KERNELS``) so that gsplat imports them instead of building:
    (True, detail) or (False, why not). ``.gz`` files are unpacked next to torch's extension cache first."""
    if not os.path.isfile(path):
        return False, f"GSPLAT_KERNELS={path}: no such file"
    try:
        if path.endswith(".gz"):
            out = os.path.join(extensions_root(), "gsplat_prebuilt", "gsplat_cuda.so")
            os.makedirs(os.path.dirname(out), exist_ok=True)
            with gzip.open(path, "rb") as src, open(out + ".tmp", "wb") as dst:
                shutil.copyfileobj(src, dst)
            os.replace(out + ".tmp", out)
            path = out
        import torch  # noqa: F401  (the module links against libtorch: load it first)
        spec = importlib.util.spec_from_file_location("gsplat_cuda", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    except Exception as e:  # another torch / CUDA / architecture, a truncated file
        return False, f"GSPLAT_KERNELS={path} does not load ({type(e).__name__}: {e})"
    import gsplat
    sys.modules["gsplat.csrc"] = module  # gsplat.cuda._backend tries `from gsplat import csrc` before it builds
    gsplat.csrc = module
    return True, f"prebuilt kernels {path}"


def gsplat_status(load_kernels=True):
    """(ok, detail): whether gsplat imports and, with ``load_kernels``, whether its CUDA kernels load (built once,
    under the lock, when missing). ``detail`` is the version when ok, else the reason. Cached per process."""
    if load_kernels in _status:
        return _status[load_kernels]
    try:
        import gsplat
        ok, detail = True, f"gsplat {gsplat.__version__}"
    except Exception as e:  # ImportError, or a broken install
        ok, detail = False, f"`import gsplat` fails ({type(e).__name__}: {e})"
    if ok and load_kernels:
        t0 = time.perf_counter()
        with file_lock(build_lock_path(), "[rasteriser] waiting for another process that builds gsplat's CUDA "
                                          "kernels"):
            if os.environ.get("GSPLAT_KERNELS") and "gsplat.cuda._backend" not in sys.modules:
                used, why = use_prebuilt_kernels(os.environ["GSPLAT_KERNELS"])
                if used:
                    detail += f" ({why})"
                else:
                    print(f"[rasteriser] {why}; building the kernels instead", flush=True)
            try:
                from gsplat.cuda._backend import _C
            except Exception as e:
                _C, detail = None, f"gsplat's CUDA kernels do not build ({type(e).__name__}: {e})"
        if _C is None:
            ok = False
            if detail.startswith("gsplat "):
                detail = "gsplat found no CUDA toolkit (nvcc) to build its kernels"
        elif time.perf_counter() - t0 > 5:
            detail += f" (CUDA kernels built in {time.perf_counter() - t0:.0f} s)"
    _status[load_kernels] = (ok, detail)
    return ok, detail


def gsplat_available():
    """True when gsplat imports and its CUDA kernels load."""
    return gsplat_status()[0]


def resolve_backend(backend, device):
    """'auto' | 'gsplat' | 'torch' + tensor device -> 'gsplat' | 'torch' (BackendError when it cannot run)."""
    if backend not in ("auto", "gsplat", "torch"):
        raise ValueError(f"raster backend must be auto, gsplat or torch, got {backend!r}")
    if backend == "torch":
        return backend
    if device.type != "cuda":
        if backend == "gsplat":
            raise BackendError(f"--raster_backend gsplat needs CUDA tensors, got device {device}; use "
                               "--raster_backend torch (or auto) on the CPU")
        _announce("auto -> torch (pure PyTorch reference; no CUDA device)")
        return "torch"
    ok, detail = gsplat_status()
    if not ok:
        raise BackendError(f"--raster_backend {backend} on {device}: {detail}. Fix: {FIX}")
    if backend == "auto":
        _announce(f"auto -> gsplat ({detail}) on {device}")
    return "gsplat"


def _announce(text):
    if text in _announced:
        return
    _announced.add(text)
    from utils.dist import is_main
    if is_main():
        print(f"[rasteriser] {text}", flush=True)
