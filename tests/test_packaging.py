"""Packaging: the top-level folders install as nfkit.* subpackages, never as top-level modules."""
import subprocess
import sys
import zipfile
from pathlib import Path


ROOT = Path(__file__).resolve().parents[1]


def test_wheel_maps_folders_under_nfkit(tmp_path):
    """`pip wheel .` (what `pip install .` installs) holds nfkit/fields etc. and no top-level fields/datasets."""
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w",
                        str(tmp_path), str(ROOT)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    wheel = next(tmp_path.glob("nfkit-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/")[0] for n in names if not n.startswith("nfkit-")}
    assert tops == {"nfkit"}, tops
    for sub in ("fields", "renderers", "datasets", "apps", "kernels"):
        assert f"nfkit/{sub}/__init__.py" in names
    assert "nfkit/kernels/csrc/hashgrid.cpp" in names  # the lazily compiled sources ship with the package


def test_installed_package_imports_as_subpackages():
    """The install resolves nfkit.fields to fields/ and puts no top-level fields/renderers/datasets of ours on the path."""
    code = ("import importlib.util, json, nfkit.fields, nfkit.datasets, nfkit.renderers, nfkit.apps\n"
            "out = {}\n"
            "for m in ('fields', 'renderers', 'datasets', 'apps'):\n"
            "    s = importlib.util.find_spec(m)\n"
            "    out[m] = None if s is None else str(s.origin)\n"
            "out['nfkit.fields'] = nfkit.fields.__file__\n"
            "print(json.dumps(out))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd="/")
    assert r.returncode == 0, r.stderr
    import json

    found = json.loads(r.stdout)
    assert Path(found.pop("nfkit.fields")).resolve() == (ROOT / "fields" / "__init__.py").resolve()
    for mod, origin in found.items():  # an unrelated PyPI package of that name may exist, but not our folder
        assert origin is None or not Path(origin).resolve().is_relative_to(ROOT), (mod, origin)
