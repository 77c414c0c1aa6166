"""Field files: save -> load gives identical outputs; bad files give FieldFileError naming the file."""
import json

import pytest
import torch
from safetensors.torch import save_file

from nfkit import fields
from nfkit.errors import FieldFileError

CFG = {"n_levels": 4, "log2_hashmap_size": 10, "hidden": 16, "max_resolution": 64}


def _field():
    torch.manual_seed(0)
    f = fields.build_field("hashgrid", CFG, torch.tensor([[-1.0, -2, -1], [1, 2, 1.5]]))
    with torch.no_grad():
        f.encoding.params.uniform_(-1, 1)
    return f


def test_round_trip_identical_outputs(tmp_path):
    f = _field()
    path = fields.save(f, tmp_path / "f.safetensors", info={"step": 7},
                       extra_tensors={"occgrid.binary": torch.ones(8, dtype=torch.bool)})
    g, meta, extras = fields.load(path, return_extras=True)
    x = torch.rand(300, 3) * 2 - 1
    d = torch.nn.functional.normalize(torch.randn(300, 3), dim=-1)
    a, b = f.eval()(x, d), g(x, d)
    assert torch.equal(a.density, b.density) and torch.equal(a.rgb, b.rgb)
    assert meta["family"] == "hashgrid" and meta["info"]["step"] == 7
    assert meta["config"] == f.config_dict()
    assert torch.equal(g.aabb, f.aabb) and torch.equal(extras["occgrid.binary"], torch.ones(8, dtype=torch.bool))


def _bad_files(tmp_path):
    good = fields.save(_field(), tmp_path / "good.safetensors")
    raw = good.read_bytes()
    (tmp_path / "truncated.safetensors").write_bytes(raw[: len(raw) // 2])
    (tmp_path / "random.safetensors").write_bytes(bytes(range(256)) * 10)
    save_file({"w": torch.zeros(3)}, str(tmp_path / "plain.safetensors"))
    meta = fields.read_header(good)
    meta["format_version"] = 99
    tensors = {"field.x": torch.zeros(1)}
    save_file(tensors, str(tmp_path / "future.safetensors"), metadata={"nfkit": json.dumps(meta)})
    return ["truncated.safetensors", "random.safetensors", "plain.safetensors", "future.safetensors", "missing.st"]


def test_bad_field_files_raise_one_line_errors_naming_the_file(tmp_path):
    for name in _bad_files(tmp_path):
        with pytest.raises(FieldFileError) as e:
            fields.load(tmp_path / name)
        msg = str(e.value)
        assert name in msg and "\n" not in msg
    with pytest.raises(FieldFileError, match="newer"):
        fields.load(tmp_path / "future.safetensors")
