"""GSPLAT_KERNELS: a built gsplat module taken from another machine is loaded instead of building (CPU checks of
the loader: a missing or broken file is reported by name and falls back; a real extension module, gzipped, loads and
is what `from gsplat import csrc` then finds)."""
import gzip
import subprocess
import sys
import sysconfig
import types

import pytest

from utils import raster_backend as rb


def test_missing_file_is_named(tmp_path):
    ok, why = rb.use_prebuilt_kernels(str(tmp_path / "nope.so"))
    assert not ok and "nope.so" in why and "no such file" in why


def test_broken_gz_reports_and_does_not_register(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path / "ext"))
    bad = tmp_path / "gsplat_cuda.so.gz"
    with gzip.open(bad, "wb") as f:
        f.write(b"not an ELF file")
    ok, why = rb.use_prebuilt_kernels(str(bad))
    assert not ok and "does not load" in why and "gsplat_cuda.so" in why
    assert "gsplat.csrc" not in sys.modules


def _build_tiny_module(tmp_path):
    """A real extension module named gsplat_cuda (answer() -> 42), or None where no C compiler / headers exist."""
    src = tmp_path / "m.c"
    src.write_text('#include <Python.h>\n'
                   'static PyObject* answer(PyObject* s, PyObject* a) { return PyLong_FromLong(42); }\n'
                   'static PyMethodDef M[] = {{"answer", answer, METH_NOARGS, ""}, {NULL, NULL, 0, NULL}};\n'
                   'static struct PyModuleDef D = {PyModuleDef_HEAD_INIT, "gsplat_cuda", "", -1, M};\n'
                   'PyMODINIT_FUNC PyInit_gsplat_cuda(void) { return PyModule_Create(&D); }\n')
    out = tmp_path / "gsplat_cuda.so"
    try:
        r = subprocess.run(["cc", "-shared", "-fPIC", "-I", sysconfig.get_paths()["include"], str(src), "-o",
                            str(out)], capture_output=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out if r.returncode == 0 else None


def test_gzipped_module_loads_and_gsplat_finds_it(tmp_path, monkeypatch):
    so = _build_tiny_module(tmp_path)
    if so is None:
        pytest.skip("no C compiler or Python headers to build a test extension module")
    gz = tmp_path / "kernels.so.gz"
    with open(so, "rb") as f, gzip.open(gz, "wb") as g:
        g.write(f.read())
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path / "ext"))
    fake = types.ModuleType("gsplat")  # the package itself is not needed to check the registration
    monkeypatch.setitem(sys.modules, "gsplat", fake)
    monkeypatch.delitem(sys.modules, "gsplat.csrc", raising=False)
    try:
        ok, why = rb.use_prebuilt_kernels(str(gz))
        assert ok, why
        from gsplat import csrc
        assert csrc.answer() == 42
        assert (tmp_path / "ext" / "gsplat_prebuilt" / "gsplat_cuda.so").is_file()
    finally:
        sys.modules.pop("gsplat.csrc", None)
