"""nfkit.tensor_files: an app's safetensors file read in one pass, one-line errors for missing, foreign and
truncated files."""
import pytest
import torch
from safetensors.torch import save_file

from nfkit.errors import FieldFileError
from nfkit.tensor_files import read_tensor_file


def test_reads_tensors_and_metadata_and_refuses_others(tmp_path):
    good = tmp_path / "enc.safetensors"
    save_file({"w": torch.arange(3.0)}, str(good), metadata={"format": "fmt-a", "info": "{}"})
    tensors, meta = read_tensor_file(good, "fmt-a", "encoder file", "nfkit x")
    assert torch.equal(tensors["w"], torch.arange(3.0)) and meta["info"] == "{}"
    with pytest.raises(FieldFileError, match="enc.safetensors: not a classifier file \\(made by nfkit y\\)"):
        read_tensor_file(good, "fmt-b", "classifier file", "nfkit y")
    with pytest.raises(FieldFileError, match="missing.safetensors: no such encoder file \\(write one with nfkit x"):
        read_tensor_file(tmp_path / "missing.safetensors", "fmt-a", "encoder file", "nfkit x")
    bad = tmp_path / "cut.safetensors"
    bad.write_bytes(good.read_bytes()[:20])
    with pytest.raises(FieldFileError, match="cut.safetensors: unreadable encoder file"):
        read_tensor_file(bad, "fmt-a", "encoder file", "nfkit x")
