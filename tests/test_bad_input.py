"""Bad input, one test per class: every command ends with exit code 2 and one ``nfkit: error:`` line on stderr (no
segmentation fault, no traceback), leaves no output that looks complete and modifies no input.

The CLI runs in-process (``nfkit.apps.cli.main``); the kernels are called directly, where a missing check used to
mean a segmentation fault.
"""
import json
import math
import resource
import socket

import numpy as np
import pytest
import torch
from conftest import TINY_FIELD, write_sphere_capture

from nfkit import fields
from nfkit.apps.cli import guarded, main
from nfkit.renderers import OccupancyGrid

AABB = torch.tensor([[-1.0, -1.0, -1.0], [1.0, 1.0, 1.0]])
SMALL_HASHGRID = {"n_levels": 2, "log2_hashmap_size": 8, "hidden": 8, "max_resolution": 16}


def one_line_error(rc, capsys, *needles) -> str:
    err = capsys.readouterr().err
    assert rc == 2, err
    assert "Traceback" not in err, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("nfkit: error:"), err
    for n in needles:
        assert n in lines[0], (n, lines[0])
    return lines[0]


def field_file(path, grid_res: int = 8, **header):
    """A small hash-grid field file with an occupancy grid; ``header`` overrides keys of its JSON header."""
    field = fields.build_field("hashgrid", SMALL_HASHGRID, AABB)
    grid = OccupancyGrid(AABB, grid_res)
    fields.save(field, path, extra_tensors={f"occgrid.{k}": v for k, v in grid.state_dict().items()})
    if header:
        rewrite(path, header=header)
    return path


def rewrite(path, header=None, tensors=None):
    """Rewrite a field file with some header keys and tensors replaced (as a crafted file would be)."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    with safe_open(str(path), framework="pt") as f:
        meta = json.loads(f.metadata()["nfkit"])
        data = {k: f.get_tensor(k) for k in f.keys()}
    meta.update(header or {})
    data.update(tensors or {})
    save_file(data, str(path), metadata={"nfkit": json.dumps(meta)})


# --------------------------------------------------------------------------------------------- kernels
def test_kernels_check_their_sizes():
    """Every C++ kernel refuses inputs it would read or write out of bounds with (a RuntimeError, not a crash)."""
    from nfkit import kernels

    ops = kernels.load()
    if ops is None:
        pytest.skip("the C++ kernels are not available (no compiler)")
    n = 4
    o, d = torch.zeros(n, 3), torch.ones(n, 3)
    tn, tf, jit = torch.zeros(n), torch.ones(n), torch.full((n,), 0.5)
    grid = OccupancyGrid(AABB, 8)
    good = dict(rays_o=o, rays_d=d, t_near=tn, t_far=tf, jitter=jit, step=0.1, binary=grid.binary, aabb=AABB,
                res=8, max_per_ray=0)

    def march(**kw):
        a = {**good, **kw}
        return ops.march(a["rays_o"], a["rays_d"], a["t_near"], a["t_far"], a["jitter"], a["step"], a["binary"],
                         a["aabb"], a["res"], a["max_per_ray"], [], [])

    assert march()[0].numel() > 0  # the good call works
    bad = [dict(res=0), dict(res=9), dict(binary=torch.ones(0, dtype=torch.bool)),
           dict(binary=torch.ones(8**3)), dict(rays_d=torch.ones(n - 1, 3)), dict(rays_o=torch.zeros(n, 2)),
           dict(t_far=torch.ones(n + 5)), dict(jitter=torch.full((n,), -1e30)), dict(step=0.0),
           dict(step=float("nan")), dict(t_far=torch.full((n,), math.inf)), dict(max_per_ray=-1),
           dict(aabb=torch.tensor([[1.0] * 3, [-1.0] * 3])), dict(aabb=torch.full((2, 3), math.nan)),
           dict(aabb=torch.zeros(3)), dict(rays_o=torch.zeros(n, 3, dtype=torch.float64))]
    for kw in bad:
        with pytest.raises(RuntimeError):
            march(**kw)
    cache = torch.zeros(4, 4, 4)
    with pytest.raises(RuntimeError):
        ops.march_cached(o, d, tn, tf, 0.1, grid.binary, AABB, 8, [], [], torch.zeros(4, 4), AABB, 1e-4, 1e-4)
    with pytest.raises(RuntimeError):
        ops.march_cached(o, d, tn, tf, 0.1, grid.binary, AABB, 8, [], [], cache, torch.zeros(2, 2), 1e-4, 1e-4)
    x = torch.rand(n, 3)
    offsets, scales, res = torch.tensor([0, 64, 128]), torch.tensor([4.0, 8.0]), torch.tensor([5, 9])
    params = torch.zeros(128 * 2)
    assert ops.hash_encode_forward(x, params, offsets, scales, res, 2).shape == (n, 4)
    for args in [(x, params[:100], offsets, scales, res, 2),  # table smaller than the levels
                 (x, params, torch.tensor([0, 64]), scales, res, 2),  # offsets not [L + 1]
                 (x, params, torch.tensor([0, 64, 64]), scales, res, 2),  # an empty level (modulo 0)
                 (x, params, offsets, scales, torch.tensor([0, 9]), 2), (x, params, offsets, scales, res, 3),
                 (x[:, :2].contiguous(), params, offsets, scales, res, 2),
                 (x, params, offsets.int(), scales, res, 2)]:
        with pytest.raises(RuntimeError):
            ops.hash_encode_forward(*args)
    with pytest.raises(RuntimeError):  # grad_out of the wrong width
        ops.hash_encode_backward(torch.zeros(n, 3), x, offsets, scales, res, 2, params.numel())


# --------------------------------------------------------------------------------------------- field files
def test_empty_occupancy_grid_and_zero_grid_resolution(tmp_path, capsys):
    """A field file whose occupancy grid has no cells, and --grid-resolution 0: one line, no mesh."""
    path = field_file(tmp_path / "f.safetensors")
    rewrite(path, tensors={"occgrid.density": torch.zeros(0), "occgrid.binary": torch.zeros(0, dtype=torch.bool)})
    before = path.read_bytes()
    mesh = tmp_path / "m.ply"
    one_line_error(main(["export", str(path), "--mesh", str(mesh), "--resolution", "8"]), capsys, str(path),
                   "occupancy grid")
    assert not mesh.exists() and path.read_bytes() == before
    data = write_sphere_capture(tmp_path / "cap", n=4, size=8)
    one_line_error(main(["fit", str(data), "--out", str(tmp_path / "o"), "--grid-resolution", "0"]), capsys,
                   "--grid-resolution")
    assert not (tmp_path / "o" / "metrics.json").exists()


def test_crafted_config_is_refused_before_allocation(tmp_path, capsys):
    """A config asking for a 2^40-entry table (terabytes) next to small tensors: refused by comparing shapes on
    the meta device, before any allocation."""
    path = field_file(tmp_path / "f.safetensors")
    rewrite(path, header={"config": {**fields.load(path).config_dict(), "log2_hashmap_size": 40, "n_levels": 16,
                                     "max_resolution": 1 << 20}})
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    one_line_error(main(["info", str(path)]), capsys, str(path), "config needs")
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss0 < 512 * 1024  # kB: no big allocation
    # consistent tensors, but a layout the C++ kernel refuses (3 features a level): refused at load, not mid-render
    from nfkit import kernels

    if kernels.load() is not None:
        odd = tmp_path / "odd.safetensors"
        fields.save(fields.build_field("hashgrid", {**SMALL_HASHGRID, "n_features_per_level": 3}, AABB), odd)
        one_line_error(main(["info", str(odd)]), capsys, str(odd), "does not evaluate")


@pytest.mark.parametrize("header", [
    {"aabb": [[-1, -1, -1], [1, float("nan"), 1]]},
    {"aabb": [[1, 1, 1], [-1, -1, -1]]},
    {"normalization": {"transform": np.diag([1.0, 1.0, 0.0, 1.0]).tolist(), "scale": 1.0}},
    {"normalization": {"transform": np.eye(4).tolist(), "scale": float("inf")}},
], ids=["nan-aabb", "inverted-aabb", "singular-normalization", "inf-scale"])
def test_non_finite_or_inverted_bounds(tmp_path, capsys, header):
    path = field_file(tmp_path / "f.safetensors", **header)
    pts = tmp_path / "p.ply"
    one_line_error(main(["export", str(path), "--points", str(pts), "--views", "2", "--view-size", "8"]), capsys,
                   str(path))
    assert not pts.exists()


def test_nan_parameters(tmp_path, capsys):
    path = field_file(tmp_path / "f.safetensors")
    table = fields.load(path).state_dict()
    name = next(k for k, v in table.items() if v.is_floating_point() and v.numel() > 10)
    bad = table[name].clone()
    bad.view(-1)[3] = float("nan")
    rewrite(path, tensors={f"field.{name}": bad})
    out = tmp_path / "o.safetensors"
    one_line_error(main(["convert", str(path), str(out), "--to", "triplane", "--steps", "1"]), capsys, str(path),
                   "non-finite")
    assert not out.exists() and not (tmp_path / "metrics.json").exists()


# --------------------------------------------------------------------------------------------- options and paths
@pytest.mark.parametrize("args,flag", [
    (["--max-seconds", "-1"], "--max-seconds"), (["--max-seconds", "nan"], "--max-seconds"),
    (["--max-seconds", "inf"], "--max-seconds"), (["--steps", "0"], "--steps"),
    (["--samples-per-step", "-5"], "--samples-per-step"), (["--n-steps-per-ray", "0"], "--n-steps-per-ray"),
    (["--lr", "nan"], "--lr"), (["--steps", "ten"], "--steps"),
])
def test_numeric_options_of_fit(tmp_path, capsys, args, flag):
    data = write_sphere_capture(tmp_path / "cap", n=4, size=8)
    one_line_error(main(["fit", str(data), "--out", str(tmp_path / "o"), *args]), capsys, flag)
    assert not (tmp_path / "o").exists()


def test_export_resolution_and_other_commands_numbers(tmp_path, capsys):
    path = field_file(tmp_path / "f.safetensors")
    mesh = tmp_path / "m.ply"
    one_line_error(main(["export", str(path), "--mesh", str(mesh), "--resolution", "100000"]), capsys,
                   "--resolution")
    assert not mesh.exists()
    one_line_error(main(["convert", str(path), str(tmp_path / "o.safetensors"), "--to", "mlp",
                         "--samples-per-step", "0"]), capsys, "--samples-per-step")
    one_line_error(main(["view", str(path), "--target-fps", "nan"]), capsys, "--target-fps")


def test_convert_never_writes_over_its_input_or_other_metrics(tmp_path, capsys):
    src = field_file(tmp_path / "fit" / "field.safetensors")
    fit_metrics = tmp_path / "fit" / "metrics.json"
    fit_metrics.write_text(json.dumps({"psnr": 30.0, "steps": 5000}))
    before, metrics_before = src.read_bytes(), fit_metrics.read_bytes()
    for args, words in [([str(src), "--to", "triplane"], "input field file"),
                        ([str(tmp_path / "s.safetensors"), "--to", "triplane", "--metrics", str(src)], "input field"),
                        ([str(tmp_path / "fit" / "student.safetensors"), "--to", "triplane"], "not written by"),
                        ([str(tmp_path / "s.safetensors"), "--to", "hashgrid", "--metrics", str(fit_metrics)],
                         "not written by")]:
        one_line_error(main(["convert", str(src), *args, "--steps", "1"]), capsys, words)
        assert src.read_bytes() == before and fit_metrics.read_bytes() == metrics_before
    assert not (tmp_path / "s.safetensors").exists() and not (tmp_path / "fit" / "student.safetensors").exists()


def test_output_path_is_a_file_or_a_folder(tmp_path, capsys):
    data = write_sphere_capture(tmp_path / "cap", n=4, size=8)
    a_file = tmp_path / "taken"
    a_file.write_text("keep me")
    one_line_error(main(["fit", str(data), "--out", str(a_file), "--steps", "1"]), capsys, "is a file")
    one_line_error(main(["fit", str(data), "--out", str(a_file / "sub"), "--steps", "1"]), capsys, "not a folder")
    assert a_file.read_text() == "keep me"
    path = field_file(tmp_path / "f.safetensors")
    folder = tmp_path / "folder.ply"
    folder.mkdir()
    one_line_error(main(["export", str(path), "--mesh", str(folder), "--resolution", "8"]), capsys, "is a folder")
    one_line_error(main(["eval", str(path), "--data", str(data), "--out", str(folder)]), capsys, "is a folder")
    assert list(folder.iterdir()) == []


def test_os_errors_and_usage_errors_are_one_line(tmp_path, capsys):
    """Permission, is-a-directory or disk errors end as one line; so do argparse's usage errors."""
    def denied():
        raise PermissionError(13, "Permission denied", str(tmp_path / "x.json"))

    def full():
        raise OSError(28, "No space left on device", str(tmp_path / "big.safetensors"))

    one_line_error(guarded(denied), capsys, "Permission denied", "x.json")
    one_line_error(guarded(full), capsys, "No space left")
    one_line_error(guarded(lambda: open(tmp_path, "w")), capsys, str(tmp_path))  # IsADirectoryError
    one_line_error(main(["fit"]), capsys, "nfkit fit")
    one_line_error(main(["no-such-command"]), capsys)


# --------------------------------------------------------------------------------------------- meshes, state
def _write_obj(path, vertices, faces):
    lines = [f"v {x} {y} {z}" for x, y, z in vertices] + [f"f {a + 1} {b + 1} {c + 1}" for a, b, c in faces]
    path.write_text("\n".join(lines) + "\n")
    return path


TET_FACES = [(0, 2, 1), (0, 1, 3), (0, 3, 2), (1, 2, 3)]


@pytest.mark.parametrize("vertices,words", [
    ([(0, 0, 0), (1, 0, 0), (0, 1, 0), (1, 1, 0)], "encloses no volume"),  # closed but flat
    ([(0, 0, 0)] * 4, "all points at one place"),
    ([(0, 0, 0), (1, 0, 0), (0, 1, 0), (0, 0, float("nan"))], "not finite"),
], ids=["flat", "collapsed", "nan"])
@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # trimesh's centre of mass of a zero-volume mesh
def test_degenerate_mesh_for_fit_sdf(tmp_path, capsys, vertices, words):
    pytest.importorskip("trimesh")
    mesh = _write_obj(tmp_path / "m.obj", vertices, TET_FACES)
    before = mesh.read_bytes()
    one_line_error(main(["fit-sdf", str(mesh), "--out", str(tmp_path / "o"), "--steps", "1"]), capsys, str(mesh),
                   words)
    assert mesh.read_bytes() == before and not (tmp_path / "o" / "metrics.json").exists()


def test_corrupt_checkpoint_state(tmp_path, capsys):
    data = write_sphere_capture(tmp_path / "cap", n=4, size=8)
    out = tmp_path / "o"
    assert main(["fit", str(data), "--out", str(out), "--steps", "2", *TINY_FIELD]) == 0
    state = out / "checkpoint" / "state.safetensors"
    assert state.is_file()
    state.write_bytes(b"\x00garbage" * 10)
    capsys.readouterr()
    one_line_error(main(["fit", str(data), "--out", str(out), "--steps", "4", "--resume", *TINY_FIELD]), capsys,
                   "state")


# --------------------------------------------------------------------------------------------- viewer
def _handshake(port: int, origin: str | None, host: str) -> int:
    """A raw websocket opening handshake; returns the HTTP status of the reply."""
    import base64
    import os

    import viser

    lines = ["GET / HTTP/1.1", f"Host: {host}", "Upgrade: websocket", "Connection: Upgrade",
             f"Sec-WebSocket-Key: {base64.b64encode(os.urandom(16)).decode()}", "Sec-WebSocket-Version: 13",
             f"Sec-WebSocket-Protocol: viser-v{viser.__version__}"]
    if origin is not None:
        lines.append(f"Origin: {origin}")
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        reply = s.recv(4096).decode("latin-1")
    return int(reply.split()[1])


def test_viewer_refuses_a_foreign_origin():
    pytest.importorskip("viser", reason="the viewer needs viser (pip install 'nfkit[viewer]')")
    from test_viewer_server import free_port
    from test_camera_path import renderable

    from nfkit.apps.viewer import ViewerApp, origin_refusal

    field, grid, opts = renderable()
    app = ViewerApp(field, grid, opts, port=free_port(), max_res=64, verbose=False)
    try:
        port = app.server.get_port()
        own = f"127.0.0.1:{port}"
        assert _handshake(port, "http://evil.example", own) == 403
        assert _handshake(port, f"http://evil.example:{port}", f"evil.example:{port}") == 403  # DNS rebinding
        assert _handshake(port, f"http://localhost:{port + 1}", own) == 403
        assert _handshake(port, f"http://{own}", own) == 101  # the viewer's own page
        assert _handshake(port, None, own) == 101  # not a browser (scripts, tests)
    finally:
        app.stop()
    assert origin_refusal("http://localhost:8080", "localhost:8080", "127.0.0.1") is None
    assert origin_refusal("null", "localhost:8080", "127.0.0.1") is not None
