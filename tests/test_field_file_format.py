"""Field files (fields/io.py): save -> load round trip, the on-disk format, and FieldFileError for bad files."""
from __future__ import annotations

import dataclasses
import json
import struct

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from nfkit import fields
from nfkit.errors import FieldFileError, NfkitError
from nfkit.fields import HashGridField

SMALL = {"n_levels": 4, "log2_hashmap_size": 10, "hidden": 16, "max_resolution": 128}
AABB = torch.tensor([[-1.0, -2.0, -0.5], [1.5, 1.0, 2.0]])


def small_field(seed: int = 0) -> HashGridField:
    """A small hash-grid field with non-trivial weights (random table, so outputs vary with x)."""
    torch.manual_seed(seed)
    f = fields.build_field("hashgrid", SMALL, AABB)
    with torch.no_grad():
        f.encoding.params.uniform_(-0.5, 0.5)
    return f.eval()


def points(n: int = 256, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    x = AABB[0] + torch.rand(n, 3, generator=g) * (AABB[1] - AABB[0])
    x[:8] = AABB[0] - 0.1  # a few outside the box (density 0)
    d = torch.nn.functional.normalize(torch.randn(n, 3, generator=g), dim=-1)
    return x, d


@pytest.fixture
def saved(tmp_path):
    f = small_field()
    extras = {"occgrid.binary": torch.rand(4, 4, 4) > 0.5, "occgrid.density": torch.rand(64),
              "extra.ints": torch.arange(5, dtype=torch.int32)}
    norm = {"transform": [[2.0, 0, 0, -1.0], [0, 2.0, 0, 0.5], [0, 0, 2.0, 0], [0, 0, 0, 1]], "scale": 2.0}
    path = fields.save(f, tmp_path / "sub" / "scene.safetensors", normalization=norm, info={"step": 42},
                       extra_tensors=extras)
    return f, path, extras, norm


def test_round_trip_gives_identical_outputs(saved):
    """The loaded field gives bit-identical density and rgb (and geometry features) on random points."""
    f, path, _, _ = saved
    g = fields.load(path)
    assert isinstance(g, HashGridField) and not g.training
    x, d = points()
    with torch.no_grad():
        a, b = f(x, d), g(x, d)
        assert torch.equal(f.density(x), g.density(x))
    assert torch.equal(a.density, b.density) and torch.equal(a.rgb, b.rgb) and torch.equal(a.features, b.features)
    assert float(a.density.std()) > 0 and bool((a.density[:8] == 0).all())
    for (k1, v1), (k2, v2) in zip(f.state_dict().items(), g.state_dict().items()):
        assert k1 == k2 and torch.equal(v1, v2)


def test_config_aabb_normalization_info_round_trip(saved):
    """Config (the full dataclass, defaults included), AABB, normalisation and info come back as saved."""
    f, path, _, norm = saved
    g, meta, _ = fields.load(path, return_extras=True)
    assert g.config == f.config and dataclasses.asdict(g.config) == {**dataclasses.asdict(f.config), **SMALL}
    assert torch.equal(g.aabb, AABB)
    assert meta["family"] == "hashgrid" and meta["kind"] == "density"
    assert meta["config"] == dataclasses.asdict(f.config) and meta["aabb"] == AABB.tolist()
    assert meta["normalization"] == norm and meta["info"] == {"step": 42}
    assert fields.read_header(path) == meta


def test_extra_tensors_round_trip(saved):
    """Extra tensors come back with the same names, dtypes, shapes and values; field tensors are not among them."""
    _, path, extras, _ = saved
    _, _, got = fields.load(path, return_extras=True)
    assert set(got) == set(extras)
    for k, v in extras.items():
        assert got[k].dtype == v.dtype and torch.equal(got[k], v), k


def test_file_is_valid_safetensors(saved):
    """The file is plain safetensors: 8-byte little-endian header length, a JSON header whose __metadata__ holds
    the nfkit JSON, and every tensor readable with safetensors' own reader under field.* or its extra name;
    no temporary file is left behind."""
    f, path, extras, _ = saved
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + n])
    meta = json.loads(header["__metadata__"]["nfkit"])
    assert meta["format"] == "nfkit-field" and meta["format_version"] == 1
    last_end = max(v["data_offsets"][1] for k, v in header.items() if k != "__metadata__")
    assert len(raw) == 8 + n + last_end
    with safe_open(str(path), framework="pt") as sf:
        keys = set(sf.keys())
        assert keys == {f"field.{k}" for k in f.state_dict()} | set(extras)
        assert torch.equal(sf.get_tensor("field.encoding.params"), f.encoding.params.detach())
    assert [p.name for p in path.parent.iterdir()] == [path.name]


# ------------------------------------------------------------------------------------------------- bad files


def _expect_error(path, *needles):
    with pytest.raises(FieldFileError) as e:
        fields.load(path)
    msg = str(e.value)
    assert path.name in msg, msg
    assert "\n" not in msg, msg
    for n in needles:
        assert n in msg, msg
    assert isinstance(e.value, NfkitError)
    return msg


@pytest.mark.parametrize("keep", [0.5, 0.99, 20])
def test_truncated_file(saved, keep):
    """A file cut short (half, all but the last bytes, or inside the header) raises FieldFileError naming it."""
    _, path, _, _ = saved
    raw = path.read_bytes()
    n = int(len(raw) * keep) if keep < 1 else keep
    bad = path.with_name("cut.safetensors")
    bad.write_bytes(raw[:n])
    _expect_error(bad)


def test_random_bytes_file(tmp_path):
    """Random bytes (not safetensors at all) raise FieldFileError naming the file."""
    bad = tmp_path / "noise.safetensors"
    bad.write_bytes(torch.randint(0, 256, (4096,), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
                    .numpy().tobytes())
    _expect_error(bad)


def test_safetensors_without_nfkit_metadata(tmp_path):
    """A valid safetensors file without the nfkit metadata (with other metadata, and with none) is rejected."""
    for i, metadata in enumerate((None, {"format": "pt"})):
        bad = tmp_path / f"plain{i}.safetensors"
        save_file({"w": torch.zeros(3)}, str(bad), metadata=metadata)
        _expect_error(bad, "nfkit")


def test_newer_format_version(saved, tmp_path):
    """A field file whose format_version is larger than supported raises FieldFileError naming the file and the
    version (tensors otherwise intact)."""
    f, path, _, _ = saved
    meta = fields.read_header(path)
    meta["format_version"] = meta["format_version"] + 1
    tensors = {f"field.{k}": v.contiguous() for k, v in f.state_dict().items()}
    bad = tmp_path / "future.safetensors"
    save_file(tensors, str(bad), metadata={"nfkit": json.dumps(meta)})
    msg = _expect_error(bad, "version")
    assert str(meta["format_version"]) in msg
    with pytest.raises(FieldFileError):
        fields.read_header(bad)


def test_missing_file_and_wrong_format_name(tmp_path, saved):
    """A path that does not exist, and nfkit metadata whose 'format' is not nfkit-field, raise FieldFileError."""
    _expect_error(tmp_path / "nope.safetensors")
    _, path, _, _ = saved
    meta = fields.read_header(path)
    meta["format"] = "something-else"
    bad = tmp_path / "other.safetensors"
    save_file({"w": torch.zeros(1)}, str(bad), metadata={"nfkit": json.dumps(meta)})
    _expect_error(bad)


def _corrupt_meta(meta: dict, case: str) -> str:
    """The 'nfkit' metadata string of a corrupted copy of a good file's metadata."""
    if case == "invalid_json":
        return "{not json"
    if case == "not_an_object":
        return "[1, 2]"
    m = json.loads(json.dumps(meta))
    if case == "no_family":
        del m["family"]
    elif case == "unknown_family":
        m["family"] = "no-such-family"
    elif case == "config_mismatch":
        m["config"]["log2_hashmap_size"] += 1  # the stored table no longer fits the config
    elif case == "config_not_object":
        m["config"] = [1, 2]
    elif case == "aabb_not_numbers":
        m["aabb"] = "big"
    return json.dumps(m)


@pytest.mark.parametrize("case", [
    "invalid_json",
    "config_mismatch",
    "not_an_object",
    "no_family",
    "unknown_family",
    "config_not_object",
    "aabb_not_numbers",
])
def test_corrupt_nfkit_metadata(saved, tmp_path, case):
    """Valid safetensors whose nfkit metadata is corrupt (bad JSON, not an object, missing or unknown family, a
    config that does not fit the tensors or is not an object, a non-numeric aabb) raise FieldFileError with a
    one-line message naming the file, never another exception."""
    f, path, _, _ = saved
    tensors = {f"field.{k}": v.contiguous() for k, v in f.state_dict().items()}
    bad = tmp_path / f"corrupt_{case}.safetensors"
    save_file(tensors, str(bad), metadata={"nfkit": _corrupt_meta(fields.read_header(path), case)})
    _expect_error(bad)
