"""Camera paths: file round trip and validation, interpolation, viser <-> OpenGL camera conventions (checked by
rendering an analytic scene against its analytic images), render modes, mp4 output and ``nfkit render``."""
import json
import math

import numpy as np
import pytest
import torch

from nfkit.apps import camera_path as cp
from nfkit.apps import view_render as vr
from nfkit.errors import NfkitError
from nfkit.fields import FieldOutput


class SphereField(torch.nn.Module):
    """Analytic field: an opaque sphere (centre c, radius r) coloured by position, 0.5 + 0.5 (x - c) / r, the
    scene of ``conftest.write_sphere_capture``. Any orientation error shows up as wrong colours."""

    kind = "density"

    def __init__(self, centre=(0.0, 0.0, 0.0), radius=0.6, sigma=400.0):
        super().__init__()
        self.register_buffer("aabb", torch.tensor([[-1.0] * 3, [1.0] * 3]))
        self.c, self.r, self.sigma = torch.tensor(centre), radius, sigma

    def density(self, x):
        return torch.where((x - self.c).norm(dim=-1) < self.r, self.sigma, 0.0)

    def forward(self, x, d):
        return FieldOutput(self.density(x), (0.5 + 0.5 * (x - self.c) / self.r).clamp(0, 1))


def renderable(field=None):
    from nfkit.renderers import OccupancyGrid, RenderOptions, default_step_size

    field = field or SphereField()
    return field, OccupancyGrid(field.aabb, 16), RenderOptions(step_size=default_step_size(field.aabb, 512))


def psnr(a, b):
    return -10 * math.log10(max(float(np.mean((a.astype(float) - b.astype(float)) ** 2)) / 255**2, 1e-12))


def make_path(n=3, **kw):
    keys = [vr.look_at((4 * math.cos(a), 4 * math.sin(a), 1.5), (0, 0, 0)) for a in np.linspace(0, 2, n)]
    return cp.CameraPath(keys, **kw)


def test_path_file_round_trip(tmp_path):
    path = make_path(4, fov_deg=42.5, width=96, height=64, fps=12.0, seconds=1.5)
    out = cp.save_path(tmp_path / "sub" / "path.json", path)
    assert not list(out.parent.glob("*.tmp"))  # written via a temporary name, renamed into place
    d = json.loads(out.read_text())
    assert d["version"] == 1 and set(d) == {"version", "fov_deg", "width", "height", "fps", "seconds", "keyframes"}
    back = cp.load_path(out)
    assert (back.fov_deg, back.width, back.height, back.fps, back.seconds) == (42.5, 96, 64, 12.0, 1.5)
    assert np.allclose(np.asarray(back.keyframes), np.asarray(path.keyframes), atol=1e-7)
    assert back.n_frames() == 18


@pytest.mark.parametrize("case,needle", [
    ("notjson", "not a camera path JSON"), ("version", "version"), ("nokeys", "keyframes"),
    ("shape", "keyframes[0]"), ("nan", "keyframes[0]"), ("rot", "orthonormal"), ("fov", "fov_deg"),
    ("width", "width"), ("fps", "fps"), ("missing", "no such"),
])
def test_bad_path_files_name_the_file(tmp_path, case, needle):
    d = make_path(2).to_json()
    p = tmp_path / "p.json"
    if case == "version":
        d["version"] = 2
    elif case == "nokeys":
        d["keyframes"] = []
    elif case == "shape":
        d["keyframes"][0]["c2w"] = [[1, 0, 0], [0, 1, 0]]
    elif case == "nan":
        d["keyframes"][0]["c2w"][0][3] = float("nan")
    elif case == "rot":
        d["keyframes"][0]["c2w"][0][0] = 3.0
    elif case == "fov":
        d["fov_deg"] = 0
    elif case == "width":
        d["width"] = 64.5
    elif case == "fps":
        d["fps"] = "fast"
    p.write_text("{oops" if case == "notjson" else json.dumps(d))
    if case == "missing":
        p = tmp_path / "absent.json"
    with pytest.raises(NfkitError) as e:
        cp.load_path(p)
    assert str(p) in str(e.value) and needle in str(e.value)


def test_interpolation_hits_keyframes_and_stays_rigid():
    path = make_path(4, fps=10, seconds=3.0)
    poses = cp.interpolate(path, 31)  # 31 frames over 3 segments: frames 0, 10, 20, 30 are the keyframes
    for i, k in zip((0, 10, 20, 30), path.keyframes):
        assert np.allclose(poses[i], k, atol=1e-6)
    r = poses[:, :3, :3]
    assert np.allclose(r @ r.transpose(0, 2, 1), np.eye(3), atol=1e-6)
    assert np.allclose(np.linalg.det(r), 1.0)
    steps = np.linalg.norm(np.diff(poses[:, :3, 3], axis=0), axis=-1)  # smooth: no jumps
    assert steps.max() < 2.5 * steps.mean()
    assert cp.interpolate(make_path(1), 5).shape == (5, 4, 4)


def test_slerp_and_quaternions():
    rng = np.random.default_rng(0)
    for _ in range(50):
        q = rng.normal(size=4)
        q /= np.linalg.norm(q)
        q = q if q[0] >= 0 else -q
        assert np.allclose(vr.quat_from_matrix(vr.matrix_from_quat(q)), q, atol=1e-9)
    q0 = vr.quat_from_matrix(np.eye(3))
    q1 = vr.quat_from_matrix(vr.matrix_from_quat([math.cos(0.5), 0, 0, math.sin(0.5)]))
    half = vr.matrix_from_quat(vr.slerp(q0, q1, 0.5))  # half of a 1-rad turn about z
    assert np.allclose(half[:2, :2], [[math.cos(0.5), -math.sin(0.5)], [math.sin(0.5), math.cos(0.5)]], atol=1e-9)


def test_viser_camera_convention():
    """viser: wxyz = R_world_camera with OpenCV axes (+Z forward, -Y up) -> OpenGL c2w (-Z forward, +Y up)."""
    c2w = vr.look_at((3.0, -2.0, 1.0), (0.0, 0.0, 0.5))
    wxyz, pos = vr.viser_from_c2w(c2w)
    r_cv = vr.matrix_from_quat(wxyz)
    assert np.allclose(r_cv[:, 2], -c2w[:3, 2])  # both look the same way
    assert np.allclose(-r_cv[:, 1], c2w[:3, 1])  # and agree on up
    assert np.allclose(pos, c2w[:3, 3])
    assert np.allclose(vr.c2w_from_viser(wxyz, pos), c2w)
    try:
        import viser.transforms as vtf
    except ImportError:
        return
    assert np.allclose(vtf.SO3(wxyz).as_matrix(), r_cv)


class FakeViserCamera:
    def __init__(self, c2w, fov_deg, w, h):
        self.wxyz, self.position = vr.viser_from_c2w(c2w)
        self.fov, self.image_width, self.image_height = math.radians(fov_deg), w, h


def test_render_from_a_viser_camera_matches_the_analytic_images(tmp_path):
    """The viewer's path (viser camera -> camera_state -> render_view) reproduces ground-truth images of an
    analytic, asymmetrically coloured scene; a camera with the wrong axis convention does not."""
    from conftest import write_sphere_capture
    from nfkit.apps.view_render import camera_state
    from nfkit.datasets import composite, load_dataset

    data = load_dataset(write_sphere_capture(tmp_path / "cap", n=3, size=48), "all")
    field, grid, opts = renderable()
    fov = math.degrees(2 * math.atan(0.5 * data.cameras.height / float(data.cameras.fy[0])))
    for i in range(len(data)):
        gt = (composite(data.images[i], torch.ones(3)).numpy() * 255).round()
        c2w, fov_s, aspect, canvas_h = camera_state(FakeViserCamera(data.cameras.c2w[i].numpy(), fov, 48, 48))
        assert aspect == 1 and canvas_h == 48 and fov_s == pytest.approx(fov)
        img = vr.render_view(field, grid, opts, c2w, 48, 48, fov_s)
        good = psnr(img, gt)
        assert good > 22, (i, good)
        assert psnr(img, gt[::-1, ::-1]) < good - 6  # the test can tell an image turned upside down
        assert psnr(img, gt[:, ::-1]) < good - 6  # or mirrored
        wrong = c2w.copy()
        wrong[:3, :3] = vr.matrix_from_quat(vr.viser_from_c2w(c2w)[0])  # OpenCV axes taken as OpenGL
        assert psnr(vr.render_view(field, grid, opts, wrong, 48, 48, fov_s), gt) < good - 6


def test_camera_state_rejects_bad_values():
    from nfkit.apps.view_render import camera_state

    good = FakeViserCamera(vr.look_at((3, 0, 0), (0, 0, 0)), 50, 64, 48)
    assert camera_state(good) is not None
    for attr, val in [("wxyz", [float("nan")] * 4), ("wxyz", [0, 0, 0, 0]), ("position", "abc"), ("fov", 0.0),
                      ("image_width", 0), ("image_height", -3), ("position", [1, 2])]:
        cam = FakeViserCamera(vr.look_at((3, 0, 0), (0, 0, 0)), 50, 64, 48)
        setattr(cam, attr, val)
        assert camera_state(cam) is None, attr


def test_render_modes_and_crop():
    field, grid, opts = renderable()
    c2w = vr.look_at((3.0, 0.0, 0.0), (0, 0, 0))
    imgs = {m: vr.render_view(field, grid, opts, c2w, 32, 32, 40.0, m, (0, 0, 0)) for m in vr.MODES}
    for m, img in imgs.items():
        assert img.shape == (32, 32, 3) and img.dtype == np.uint8, m
    centre = (16, 16)
    assert imgs["opacity"][centre].min() > 250 and imgs["opacity"][0, 0].max() < 5
    # normals at the centre of a sphere seen from +X point to +X: colour ~ (1, 0.5, 0.5)
    assert np.allclose(imgs["normals"][centre] / 255, (1, 0.5, 0.5), atol=0.1)
    assert imgs["depth"][centre].max() > 0
    # crop away x > -0.2: only the back of the sphere remains, seen through the hole -> darker red channel
    crop = (torch.tensor([-1.0, -1, -1]), torch.tensor([-0.2, 1, 1]))
    cropped = vr.render_view(field, grid, opts, c2w, 32, 32, 40.0, "rgb", (0, 0, 0), crop)
    assert cropped[centre][0] < imgs["rgb"][centre][0] - 60
    assert vr.render_view(field, grid, opts, c2w, 32, 32, 40.0, "rgb", should_stop=lambda: True) is None
    with pytest.raises(NfkitError):
        vr.render_view(field, grid, opts, c2w, 8, 8, 40.0, "xray")


def test_render_video_and_cli(tmp_path):
    import imageio.v3 as iio

    from nfkit import fields
    from nfkit.apps.cli import main

    field = fields.build_field("hashgrid", {"n_levels": 2, "log2_hashmap_size": 10, "hidden": 16,
                                            "max_resolution": 32})
    fpath = fields.save(field, tmp_path / "f.safetensors")
    ppath = cp.save_path(tmp_path / "path.json", make_path(2, width=33, height=24, fps=8, seconds=0.5))
    out = tmp_path / "v" / "video.mp4"
    assert main(["render", str(fpath), "--path", str(ppath), "--out", str(out), "--quiet"]) == 0
    frames = iio.imread(out, plugin="pyav") if _has_av() else np.stack(list(iio.imiter(out)))
    assert frames.shape[0] == 4 and frames.shape[1:3] == (24, 34)  # odd width padded to even for yuv420p
    assert not list(out.parent.glob("*.tmp*"))
    assert main(["render", str(fpath), "--path", str(tmp_path / "nope.json"), "--out", str(out)]) == 2
    assert main(["render", str(fpath), "--path", str(ppath), "--out", str(tmp_path / "v.gif")]) == 2
    assert main(["render", str(tmp_path / "nofield"), "--path", str(ppath), "--out", str(out)]) == 2


def _has_av():
    try:
        import av  # noqa: F401
    except ImportError:
        return False
    return True
