"""Data loaders: camera conventions, image decoding, every format on real data, agreement across formats, errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from backend.data import detect_format, load_scene, load_scene_with_info
from backend.data.cameras import (
    decompose_projection,
    intrinsics,
    opengl_to_opencv,
    projection_matrix,
    scale_intrinsics,
)
from backend.data.export import write_colmap, write_neus, write_transforms
from backend.data.images import list_images, load_images, match_masks, natural_key, read_image, read_mask
from backend.data.neus import read_neus_cameras
from backend.errors import BackendError
from backend.scene import CV_TO_GL, Scene, project

TEMPLE_BOX = np.array([[-0.073568, 0.021728, -0.012445], [0.028855, 0.181892, 0.062736]])
DINO_BOX = np.array([[-0.061897, -0.018874, -0.057845], [0.010897, 0.068227, 0.015495]])


# ---------------------------------------------------------------------------------------------------------------
# helpers


def look_at(eye: np.ndarray, target: np.ndarray, up: tuple[float, float, float] = (0.0, 0.0, 1.0)) -> np.ndarray:
    """(4, 4) OpenCV camera-to-world at ``eye`` looking at ``target`` (image y points roughly against ``up``)."""
    z = target - eye
    z = z / np.linalg.norm(z)
    x = np.cross(z, up)
    if np.linalg.norm(x) < 1e-9:
        x = np.cross(z, [0.0, 1.0, 0.0])
    x = x / np.linalg.norm(x)
    y = np.cross(z, x)
    c2w = np.eye(4)
    c2w[:3, :3] = np.stack([x, y, z], axis=1)
    c2w[:3, 3] = eye
    return c2w


def synthetic_scene(n: int = 6, size: tuple[int, int] = (40, 30), masks: bool = True, seed: int = 0,
                    radius: float = 0.5) -> Scene:
    """A ring of cameras around a sphere of ``radius`` at the origin; masks are the sphere's silhouettes."""
    rng = np.random.default_rng(seed)
    w, h = size
    c2w, Ks, ims, ms = [], [], [], []
    for i in range(n):
        a = 2 * np.pi * i / n
        elev = np.radians(35.0) * (-1) ** i
        eye = 3 * np.array([np.cos(a) * np.cos(elev), np.sin(a) * np.cos(elev), np.sin(elev)])
        c2w.append(look_at(eye, np.zeros(3)))
        K = intrinsics(1.1 * w + i, 1.1 * w + 0.5 * i, w / 2 - 0.3 + 0.1 * i, h / 2 + 0.2)
        Ks.append(K)
        ims.append(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
        # silhouette of the sphere: pixels whose ray passes within `radius` of the origin
        uu, vv = np.meshgrid(np.arange(w), np.arange(h))
        rays = np.stack([(uu - K[0, 2]) / K[0, 0], (vv - K[1, 2]) / K[1, 1], np.ones_like(uu, float)], -1)
        rays = rays @ c2w[-1][:3, :3].T
        rays /= np.linalg.norm(rays, axis=-1, keepdims=True)
        o = eye
        t = -(rays @ o)
        dist = np.linalg.norm(o + t[..., None] * rays, axis=-1)
        ms.append(np.where(dist <= radius, 255, 0).astype(np.uint8))
    return Scene(names=[f"view{i}.png" for i in range(n)], images=ims, K=np.stack(Ks), c2w=np.stack(c2w),
                 masks=ms if masks else None)


def assert_same_cameras(a: Scene, b: Scene, atol_px: float = 1e-6, skew: bool = True) -> None:
    """Same K, same pose, and the same pixel for points around the scene (``skew=False``: K's skew may differ,
    as transforms.json and COLMAP have no place for it)."""
    assert len(a) == len(b)
    Ka, Kb = a.K.copy(), b.K.copy()
    if not skew:
        Ka[:, 0, 1] = Kb[:, 0, 1] = 0.0
    np.testing.assert_allclose(Ka, Kb, atol=1e-6 * max(1.0, float(np.abs(a.K).max())))
    scale = max(1.0, float(np.abs(a.c2w[:, :3, 3]).max()))
    np.testing.assert_allclose(a.c2w, b.c2w, atol=1e-9 * scale)
    center = np.median(a.camera_centers(), axis=0) * 0.5
    pts = center + np.random.default_rng(1).normal(size=(20, 3)) * 0.1 * scale
    for i in range(len(a)):
        uv_a, z_a = project(a.K[i], a.c2w[i], pts)
        uv_b, z_b = project(b.K[i], b.c2w[i], pts)
        np.testing.assert_allclose(uv_a, uv_b, atol=atol_px)
        np.testing.assert_allclose(z_a, z_b, rtol=1e-9)


def raises(match: str):  # noqa: ANN201 - a pytest context manager
    return pytest.raises(BackendError, match=match)


# ---------------------------------------------------------------------------------------------------------------
# camera conventions


@pytest.mark.parametrize("s", [1.0, -1.0, 3.7, -0.002])
def test_decompose_projection_reproduces_P(s: float) -> None:
    rng = np.random.default_rng(0)
    for _ in range(20):
        K = intrinsics(*rng.uniform(200, 3000, 2), *rng.uniform(100, 900, 2), skew=rng.uniform(-5, 5))
        q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
        R = q * np.sign(np.linalg.det(q))
        t = rng.normal(size=3) * 10
        P = s * K @ np.hstack([R, t[:, None]])
        K2, c2w = decompose_projection(P)
        np.testing.assert_allclose(K2, K, rtol=1e-9, atol=1e-7)
        assert np.all(np.diag(K2) > 0) and K2[2, 2] == 1.0
        np.testing.assert_allclose(np.linalg.det(c2w[:3, :3]), 1.0, atol=1e-12)
        np.testing.assert_allclose(c2w[:3, :3], R.T, atol=1e-9)
        P2 = projection_matrix(K2, c2w)
        np.testing.assert_allclose(P2 * s, P, rtol=1e-9, atol=1e-6 * np.abs(P).max())
        # 4x4 world_mat as NeuS stores it
        P4 = np.vstack([P, [0, 0, 0, 1]])
        np.testing.assert_allclose(decompose_projection(P4)[1], c2w, atol=1e-9)


def test_opengl_opencv_round_trip() -> None:
    rng = np.random.default_rng(2)
    c2w = look_at(rng.normal(size=3) * 4, np.zeros(3))
    np.testing.assert_allclose(opengl_to_opencv(opengl_to_opencv(c2w)), c2w)
    np.testing.assert_array_equal(CV_TO_GL, np.diag([1.0, -1.0, -1.0, 1.0]))
    # an OpenGL camera at the origin looks down -z with +y up: a point at (0, 1, -5) is above the image centre
    K = intrinsics(100, 100, 49.5, 39.5)
    uv, z = project(K, opengl_to_opencv(np.eye(4)), np.array([[0.0, 1.0, -5.0]]))
    assert z[0] == pytest.approx(5.0)
    assert uv[0, 0] == pytest.approx(49.5) and uv[0, 1] < 39.5


def test_scale_intrinsics_follows_pillow_pixel_centres() -> None:
    """A linear ramp I(x) = x (pixel-centre coordinate) resized by Pillow: the value of output pixel x' is the input
    coordinate of its centre, which K must agree with: x = (x' + 0.5) / s - 0.5."""
    w, h = 96, 64
    ramp = np.tile(np.arange(w, dtype=np.float32), (h, 1))
    for nw in (48, 24, 37):
        out = np.asarray(Image.fromarray(ramp, mode="F").resize((nw, h), Image.Resampling.BILINEAR))
        s = nw / w
        centres = (np.arange(nw) + 0.5) / s - 0.5
        inner = slice(2, nw - 2)  # the filter is clipped at the borders
        # exact for integer factors; a sampled kernel is a few hundredths off elsewhere. The other convention
        # (x' = x * s) would be off by 0.5 / s - 0.5 >= 0.5 px.
        np.testing.assert_allclose(out[h // 2, inner], centres[inner], atol=1e-3 if w % nw == 0 else 0.05)
        assert abs(float(np.mean(out[h // 2, inner] - centres[inner]))) < 0.01
        # the same through K: a camera ray through input pixel x lands at output pixel x'
        K = intrinsics(100, 100, 40.0, 30.0)
        K2 = scale_intrinsics(K, s, 1.0)
        for x in (0.0, 17.0, 95.0):
            x_new = (x - K[0, 2]) / K[0, 0] * K2[0, 0] + K2[0, 2]
            assert x_new == pytest.approx((x + 0.5) * s - 0.5)


# ---------------------------------------------------------------------------------------------------------------
# image files


def test_image_modes_and_bit_depths(tmp_path: Path) -> None:
    g16 = (np.arange(12 * 10).reshape(10, 12) * 500).astype(np.uint16)
    Image.fromarray(g16).save(tmp_path / "g16.png")
    rgb, alpha = read_image(tmp_path / "g16.png")
    assert rgb.dtype == np.uint8 and rgb.shape == (10, 12, 3) and alpha is None
    np.testing.assert_array_equal(rgb[..., 0], (g16 >> 8).astype(np.uint8))

    gray = np.arange(120, dtype=np.uint8).reshape(10, 12)
    Image.fromarray(gray).save(tmp_path / "g8.png")
    rgb, _ = read_image(tmp_path / "g8.png")
    np.testing.assert_array_equal(rgb, np.repeat(gray[..., None], 3, axis=2))

    rgba = np.zeros((10, 12, 4), np.uint8)
    rgba[..., 0] = 200
    rgba[2:5, 3:7, 3] = 255
    Image.fromarray(rgba).save(tmp_path / "rgba.png")
    rgb, alpha = read_image(tmp_path / "rgba.png")
    assert rgb.shape == (10, 12, 3) and alpha is not None and alpha.sum() == 12 * 255
    assert read_mask(tmp_path / "rgba.png").sum() == 12 * 255  # a cut-out: its alpha is the mask

    Image.fromarray(gray).convert("P").save(tmp_path / "pal.png")
    assert read_image(tmp_path / "pal.png")[0].shape == (10, 12, 3)
    Image.fromarray(rgba[..., 3]).convert("LA").save(tmp_path / "la.png")
    rgb, alpha = read_image(tmp_path / "la.png")
    assert rgb.shape == (10, 12, 3) and alpha is not None
    Image.fromarray(rgba[..., :3]).save(tmp_path / "x.webp", lossless=True)
    np.testing.assert_array_equal(read_image(tmp_path / "x.webp")[0], rgba[..., :3])

    m16 = np.zeros((10, 12), np.uint16)
    m16[3:6, 2:4] = 65535
    Image.fromarray(m16).save(tmp_path / "m16.png")
    m = read_mask(tmp_path / "m16.png")
    assert m.dtype == np.uint8 and set(np.unique(m)) == {0, 255} and (m > 0).sum() == 6


def test_exif_orientation_is_not_applied(tmp_path: Path) -> None:
    im = Image.fromarray(np.zeros((20, 40, 3), np.uint8))
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    im.save(tmp_path / "rot.jpg", exif=exif.tobytes())
    rgb, _ = read_image(tmp_path / "rot.jpg")
    assert rgb.shape == (20, 40, 3)  # the stored pixels, which the cameras refer to


def test_natural_order_and_extensions(tmp_path: Path) -> None:
    for n in ("img10.PNG", "img2.jpg", "img1.JPEG", "img3.tif", "notes.txt", ".hidden.png"):
        (tmp_path / n).write_bytes(b"x")
    assert [p.name for p in list_images(tmp_path)] == ["img1.JPEG", "img2.jpg", "img3.tif", "img10.PNG"]
    assert sorted(["a10", "a9", "b1", "a09x"], key=natural_key) == ["a9", "a09x", "a10", "b1"]


def test_load_images_downscale_keeps_pixel_centres(tmp_path: Path) -> None:
    """JPEG draft decoding + Lanczos and PNG + Lanczos give the same scale factors and intrinsics."""
    rng = np.random.default_rng(0)
    arr = rng.integers(0, 255, (96, 128, 3), dtype=np.uint8)
    Image.fromarray(arr).save(tmp_path / "a.jpg", quality=95)
    Image.fromarray(arr).save(tmp_path / "b.png")
    mask = np.zeros((96, 128), np.uint8)
    mask[10:50, 20:90] = 255
    Image.fromarray(mask).save(tmp_path / "m.png")
    got = load_images([tmp_path / "a.jpg", tmp_path / "b.png"], [tmp_path / "m.png"] * 2, max_image_size=32,
                      workers=2)
    assert [im.shape for im in got.images] == [(24, 32, 3), (24, 32, 3)]
    assert got.masks is not None and got.masks[0].shape == (24, 32) and set(np.unique(got.masks[0])) == {0, 255}
    np.testing.assert_allclose(got.scales, 0.25)
    np.testing.assert_array_equal(got.full_sizes, [[128, 96], [128, 96]])
    diff = np.abs(got.images[0].astype(int) - got.images[1].astype(int)).mean()
    assert diff < 12  # same content, two decoders
    K = got.scale_K(np.stack([intrinsics(100, 100, 63.5, 47.5)] * 2))
    np.testing.assert_allclose(K[0, :2, 2], [15.5, 11.5])  # the image centre stays the image centre


def test_mask_matching_rules(tmp_path: Path) -> None:
    imgs = [tmp_path / "im" / f"{i:06d}.jpg" for i in range(3)]
    (tmp_path / "m").mkdir()
    for i in range(3):
        (tmp_path / "m" / f"{i:03d}.png").write_bytes(b"")  # DTU: 000.png for 000000.jpg
    assert [p.name for p in match_masks(imgs, tmp_path / "m")] == ["000.png", "001.png", "002.png"]
    (tmp_path / "c").mkdir()
    for n in ("000000.jpg.png", "000001.jpg.png", "000002.jpg.png"):  # COLMAP: name + .png
        (tmp_path / "c" / n).write_bytes(b"")
    assert [p.name for p in match_masks(imgs, tmp_path / "c")][0] == "000000.jpg.png"
    (tmp_path / "o").mkdir()
    for n in ("a.png", "b.png", "c.png"):  # unrelated names, same count: natural order (NeuS)
        (tmp_path / "o" / n).write_bytes(b"")
    assert [p.name for p in match_masks(imgs, tmp_path / "o")] == ["a.png", "b.png", "c.png"]
    (tmp_path / "c" / "000002.jpg.png").unlink()
    with raises("No mask for image 000002.jpg"):
        match_masks(imgs, tmp_path / "c")


# ---------------------------------------------------------------------------------------------------------------
# writers and loaders agree (synthetic, no data needed)


@pytest.mark.parametrize("writer", ["neus", "nerf", "colmap", "colmap_text"])
def test_writer_loader_round_trip(tmp_path: Path, writer: str) -> None:
    scene = synthetic_scene()
    scene.points = np.random.default_rng(3).normal(size=(30, 3))
    scene.point_colors = np.random.default_rng(4).integers(0, 255, (30, 3)).astype(np.uint8)
    if writer == "neus":
        write_neus(scene, tmp_path)
    elif writer == "nerf":
        write_transforms(scene, tmp_path)
    else:
        write_colmap(scene, tmp_path, text=writer == "colmap_text")
    expected = "nerf" if writer == "nerf" else writer.split("_")[0]
    assert detect_format(tmp_path) == expected
    loaded = load_scene(tmp_path, normalize=False)
    assert loaded.source == expected
    assert_same_cameras(scene, loaded)
    for a, b in zip(scene.images, loaded.images, strict=True):
        np.testing.assert_array_equal(a, b)
    assert loaded.masks is not None
    for a, b in zip(scene.masks, loaded.masks, strict=True):  # type: ignore[arg-type]
        np.testing.assert_array_equal(a, b)
    if writer.startswith("colmap"):
        assert loaded.points is not None and loaded.point_colors is not None
        order = np.lexsort(loaded.points.T)
        np.testing.assert_allclose(loaded.points[order], scene.points[np.lexsort(scene.points.T)])
    if writer == "neus":
        np.testing.assert_allclose(loaded.to_world, np.eye(4))


def test_colmap_layouts_and_points_normalization(tmp_path: Path) -> None:
    """sparse/0, sparse/ and the model folder itself; a model with points is normalized from them."""
    scene = synthetic_scene(n=4, masks=False)
    scene.points = np.random.default_rng(0).uniform(-0.4, 0.4, (200, 3))
    model = write_colmap(scene, tmp_path)
    for f in model.iterdir():
        f.rename(tmp_path / "sparse" / f.name)
    model.rmdir()
    assert detect_format(tmp_path) == "colmap"
    assert_same_cameras(scene, load_scene(tmp_path, normalize=False))
    assert detect_format(tmp_path / "sparse") == "colmap"  # the model folder: images/ one level up
    loaded, info = load_scene_with_info(tmp_path / "sparse")
    assert_same_cameras(scene, loaded)
    assert info["method"] == "sparse_points" and 0.4 < info["radius"] < 0.4 * np.sqrt(3) * 1.3
    assert loaded.roi is not None and np.all(loaded.roi[1] - loaded.roi[0] < 2)


def test_transforms_variants(tmp_path: Path) -> None:
    """camera_angle_x, file_path without extension, RGBA alpha as masks, json path instead of the folder."""
    scene = synthetic_scene(n=3, masks=True)
    (tmp_path / "train").mkdir()
    frames = []
    for i in range(3):
        rgba = np.dstack([scene.images[i], scene.masks[i]])  # type: ignore[index]
        Image.fromarray(rgba).save(tmp_path / "train" / f"r_{i}.png")
        frames.append({"file_path": f"./train/r_{i}", "transform_matrix": (scene.c2w[i] @ CV_TO_GL).tolist()})
    angle = 2 * np.arctan(40 / 2 / 44.0)
    (tmp_path / "transforms_train.json").write_text(json.dumps({"camera_angle_x": angle, "frames": frames}))
    s = load_scene(tmp_path, normalize=False)
    assert s.masks is not None
    np.testing.assert_array_equal(s.masks[1], scene.masks[1])  # type: ignore[index]
    np.testing.assert_allclose(s.K[0], intrinsics(44.0, 44.0, 19.5, 14.5))
    np.testing.assert_allclose(s.c2w, scene.c2w, atol=1e-12)
    s2 = load_scene(tmp_path / "transforms_train.json", normalize=False)
    np.testing.assert_allclose(s2.K, s.K)
    # w/h of another resolution than the files: intrinsics follow the files
    meta = {"fl_x": 88.0, "fl_y": 88.0, "cx": 40.0, "cy": 30.0, "w": 80, "h": 60, "frames": frames}
    (tmp_path / "half.json").write_text(json.dumps(meta))
    s3 = load_scene(tmp_path / "half.json", normalize=False)
    np.testing.assert_allclose(s3.K[0], intrinsics(44.0, 44.0, 19.5, 14.5))


# ---------------------------------------------------------------------------------------------------------------
# real data


@pytest.fixture(scope="module")
def temple(data_dir: Path) -> Scene:
    return load_scene(data_dir / "middlebury" / "templeSparseRing", normalize=False)


@pytest.fixture(scope="module")
def dtu(data_dir: Path) -> Scene:
    """DTU scan 65 at 400 x 300 (fast), all 49 views."""
    return load_scene(data_dir / "dtu_scan65", max_image_size=400, normalize=False)


def test_dtu_neus_layout(dtu: Scene, data_dir: Path) -> None:
    root = data_dir / "dtu_scan65"
    assert detect_format(root) == "neus" and dtu.source == "neus"
    assert len(dtu) == 49 and dtu.names[0] == "000000.jpg"
    assert all(im.shape == (300, 400, 3) and im.dtype == np.uint8 for im in dtu.images)
    assert dtu.masks is not None and all(m.shape == (300, 400) for m in dtu.masks)
    assert set(np.unique(dtu.masks[0])) == {0, 255}
    with np.load(root / "cameras_sphere.npz") as z:
        scale_mat = z["scale_mat_0"]
        P0 = z["world_mat_0"][:3]
    np.testing.assert_allclose(dtu.to_world, scale_mat)
    # full-resolution K from world_mat_0, scaled by 1/4 with the pixel-centre rule
    K_full, c2w = read_neus_cameras(root / "cameras_sphere.npz", 49)[:2]
    np.testing.assert_allclose(dtu.K[0], scale_intrinsics(K_full[0], 0.25, 0.25))
    np.testing.assert_allclose(dtu.c2w, c2w)
    x = np.array([[10.0, -20.0, 600.0]])
    uv, _ = project(K_full[0], c2w[0], x)
    uvw = P0 @ np.append(x[0], 1.0)
    np.testing.assert_allclose(uv[0], uvw[:2] / uvw[2], rtol=1e-9)
    assert 800 < K_full[0, 0, 2] < 850 and 600 < K_full[0, 1, 2] < 640  # the known principal point (823, 619)
    # the sphere's centre is in front of every camera, inside its image and inside its mask
    for i in range(49):
        uv, z = project(dtu.K[i], dtu.c2w[i], scale_mat[None, :3, 3])
        assert z[0] > 0
        col, row = np.round(uv[0]).astype(int)
        assert 0 <= col < 400 and 0 <= row < 300
        assert dtu.masks[i][row, col] == 255


@pytest.mark.parametrize("name, box", [("templeSparseRing", TEMPLE_BOX), ("dinoSparseRing", DINO_BOX)])
def test_middlebury_box_projects_into_every_image(data_dir: Path, name: str, box: np.ndarray) -> None:
    root = data_dir / "middlebury" / name
    assert detect_format(root) == "middlebury"
    s = load_scene(root, normalize=False)
    assert len(s) == 16 and s.masks is None and s.images[0].shape == (480, 640, 3)
    corners = np.array([[box[i, 0], box[j, 1], box[k, 2]] for i in (0, 1) for j in (0, 1) for k in (0, 1)])
    pts = np.vstack([corners, box.mean(0)])
    # "the dino is partially outside the field of view in some images": its box corners reach 80 px beyond
    margin = 100 if name.startswith("dino") else 0
    for i in range(len(s)):
        uv, z = project(s.K[i], s.c2w[i], pts)
        assert np.all(z > 0)
        assert np.all(uv >= -margin) and np.all(uv[:, 0] < 640 + margin) and np.all(uv[:, 1] < 480 + margin)
        assert 0 <= uv[-1, 0] < 640 and 0 <= uv[-1, 1] < 480  # the centre always is
    # the par file's P = K [R | t] is what the scene projects with (R is stored to ~1e-7: orthonormalized)
    line = (root / f"{name.replace('SparseRing', 'SR')}_par.txt").read_text().splitlines()[1].split()
    v = np.array([float(x) for x in line[1:]])
    P = v[:9].reshape(3, 3) @ np.hstack([v[9:18].reshape(3, 3), v[18:21, None]])
    uvw = pts @ P[:, :3].T + P[:, 3]
    np.testing.assert_allclose(project(s.K[0], s.c2w[0], pts)[0], uvw[:, :2] / uvw[:, 2:], atol=1e-3)


def test_downscaled_load_projects_consistently(data_dir: Path, temple: Scene) -> None:
    small = load_scene(data_dir / "middlebury" / "templeSparseRing", max_image_size=320, normalize=False)
    assert small.images[0].shape == (240, 320, 3)
    pts = np.random.default_rng(0).uniform(TEMPLE_BOX[0], TEMPLE_BOX[1], (50, 3))
    for i in range(len(temple)):
        uv_full, _ = project(temple.K[i], temple.c2w[i], pts)
        uv_small, _ = project(small.K[i], small.c2w[i], pts)
        np.testing.assert_allclose(uv_small, (uv_full + 0.5) * 0.5 - 0.5, atol=1e-9)


def test_formats_agree_on_real_scenes(tmp_path: Path, dtu: Scene, temple: Scene) -> None:
    """The same real capture written as NeuS, transforms.json and COLMAP loads back with the same cameras (a 3D
    point lands on the same pixel), images and masks. DTU's K has a skew of -2.5e-4 px (full size) that only
    the NeuS format can hold: dropping it moves a pixel by at most a thousandth."""
    cases = {"dtu": dtu.subset([0, 7, 21, 40]), "temple": temple.subset([0, 5, 10, 15])}
    for key, scene in cases.items():
        loaded = {}
        for fmt, writer in (("neus", write_neus), ("nerf", write_transforms), ("colmap", write_colmap)):
            out = tmp_path / key / fmt
            writer(scene, out)
            loaded[fmt] = load_scene(out, normalize=False)
            assert loaded[fmt].source == fmt
            assert_same_cameras(scene, loaded[fmt], atol_px=1e-3, skew=fmt == "neus")
            for a, b in zip(scene.images, loaded[fmt].images, strict=True):
                np.testing.assert_array_equal(a, b)
            assert (loaded[fmt].masks is None) == (scene.masks is None)
        assert_same_cameras(loaded["neus"], loaded["colmap"], atol_px=1e-3, skew=False)
        assert_same_cameras(loaded["nerf"], loaded["colmap"])
    # the dataset's normalization survives the NeuS writer
    np.testing.assert_allclose(load_scene(tmp_path / "dtu" / "neus", normalize=False).to_world, dtu.to_world)


# ---------------------------------------------------------------------------------------------------------------
# bad input


def _neus_folder(tmp_path: Path, n: int = 3, masks: bool = True) -> Path:
    scene = synthetic_scene(n=n, masks=masks)
    write_neus(scene, tmp_path / "cap")
    return tmp_path / "cap"


def test_error_missing_folder(tmp_path: Path) -> None:
    with raises("does not exist") as exc:
        load_scene(tmp_path / "nope")
    assert exc.value.file == str(tmp_path / "nope")


def test_error_empty_folder(tmp_path: Path) -> None:
    with raises("holds no capture") as exc:
        load_scene(tmp_path)
    assert "transforms.json" in str(exc.value) and "cameras_sphere.npz" in str(exc.value)
    (tmp_path / "image").mkdir()
    np.savez(tmp_path / "cameras_sphere.npz", world_mat_0=np.eye(4))
    with raises("No images found"):
        load_scene(tmp_path)


def test_error_photos_without_poses(tmp_path: Path) -> None:
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "a.jpg")
    with raises("no camera poses") as exc:
        detect_format(tmp_path)
    assert "python -m backend poses" in exc.value.hint


def test_error_unknown_file(tmp_path: Path) -> None:
    (tmp_path / "cams.xml").write_text("<x/>")
    with raises("Unknown capture file") as exc:
        load_scene(tmp_path / "cams.xml")
    assert "COLMAP" in exc.value.hint and "Middlebury" in exc.value.hint


def test_damaged_images_are_left_out_with_their_cameras(tmp_path: Path) -> None:
    """A damaged photo is decoded completely or not at all: it is left out (named, with the reason), its camera
    with it; the others keep their own cameras. With every photo damaged, or skip_damaged=False, it is an error."""
    root = _neus_folder(tmp_path)
    whole = load_scene(root, normalize=False)
    bad = root / "image" / "000001.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\nnot really a png")
    scene = load_scene(root, normalize=False)
    assert scene.names == [whole.names[0], whole.names[2]] and len(scene.images) == 2
    np.testing.assert_array_equal(scene.c2w, whole.c2w[[0, 2]])
    np.testing.assert_array_equal(scene.K, whole.K[[0, 2]])
    assert len(scene.masks) == 2 and scene.image_paths == [whole.image_paths[0], whole.image_paths[2]]
    assert [s["name"] for s in scene.skipped] == ["000001.png"] and scene.skipped[0]["file"] == str(bad)
    assert scene.summary()["skipped"][0]["name"] == "000001.png"
    noise = np.random.default_rng(0).integers(0, 255, (30, 40, 3), dtype=np.uint8)
    bad.write_bytes(Image.fromarray(noise)._repr_png_()[:2000])  # truncated
    assert "truncated" in load_scene(root, normalize=False).skipped[0]["reason"]
    with raises("Cannot read the image") as exc:
        load_images([bad], skip_damaged=False)
    assert exc.value.file == str(bad)
    for i in (0, 2):
        (root / "image" / f"{i:06d}.png").write_bytes(b"not an image")
    with raises("None of the 3 images can be read"):
        load_scene(root)


def test_error_camera_count_mismatch(tmp_path: Path) -> None:
    root = _neus_folder(tmp_path)
    with np.load(root / "cameras_sphere.npz") as z:
        arrays = {k: z[k] for k in z.files if not k.endswith("_2")}
    np.savez(root / "cameras_sphere.npz", **arrays)
    with raises("describes 2 cameras but the image folder holds 3 images") as exc:
        load_scene(root)
    assert exc.value.file == str(root / "cameras_sphere.npz")


def test_error_mask_size(tmp_path: Path) -> None:
    root = _neus_folder(tmp_path)
    Image.fromarray(np.zeros((10, 10), np.uint8)).save(root / "mask" / "000002.png")
    with raises("The mask is 10x10 but its image 000002.png is 40x30") as exc:
        load_scene(root)
    assert exc.value.file == str(root / "mask" / "000002.png")


def test_error_missing_mask(tmp_path: Path) -> None:
    root = _neus_folder(tmp_path)
    (root / "mask" / "000001.png").unlink()
    with raises("No mask for image 000001.png"):
        load_scene(root)


def test_error_transforms_missing_file(tmp_path: Path) -> None:
    write_transforms(synthetic_scene(n=3), tmp_path)
    (tmp_path / "images" / "view1.png").unlink()
    with raises("missing image: images/view1.png") as exc:
        load_scene(tmp_path)
    assert exc.value.file == str(tmp_path / "transforms.json")
    meta = json.loads((tmp_path / "transforms.json").read_text())
    meta["frames"] = meta["frames"][:1] + meta["frames"][2:]
    del meta["frames"][0]["mask_path"]
    (tmp_path / "transforms.json").write_text(json.dumps(meta))
    with raises("has no mask_path while other frames have one"):
        load_scene(tmp_path)
    meta["frames"][0]["k1"] = 0.1
    (tmp_path / "transforms.json").write_text(json.dumps(meta))
    with raises("lens distortion k1"):
        load_scene(tmp_path)
    (tmp_path / "transforms.json").write_text("{not json")
    with raises("Cannot read the json"):
        load_scene(tmp_path)


def test_error_colmap_distortion(tmp_path: Path) -> None:
    import pycolmap

    model = write_colmap(synthetic_scene(n=3, masks=False), tmp_path)
    rec = pycolmap.Reconstruction(str(model))
    cam = next(iter(rec.cameras.values()))
    fx, fy, cx, cy = cam.params
    dist = pycolmap.Camera.create_from_model_name(cam.camera_id, "OPENCV", fx, cam.width, cam.height)
    dist.params = [fx, fy, cx, cy, 0.0, 0.0, 0.0, 0.0]
    rec.cameras[cam.camera_id].model = dist.model
    rec.cameras[cam.camera_id].params = dist.params
    rec.write(str(model))
    load_scene(tmp_path, normalize=False)  # OPENCV with zero distortion is a pinhole camera
    rec.cameras[cam.camera_id].params = [fx, fy, cx, cy, -0.1, 0.0, 0.0, 0.0]
    rec.write(str(model))
    with raises("OPENCV model with lens distortion") as exc:
        load_scene(tmp_path)
    assert "python -m backend poses" in exc.value.hint


def test_error_middlebury(tmp_path: Path) -> None:
    Image.fromarray(np.zeros((30, 40, 3), np.uint8)).save(tmp_path / "a.png")
    cam = " ".join(["100 0 20 0 100 15 0 0 1", "1 0 0 0 1 0 0 0 1", "0 0 2"])
    (tmp_path / "x_par.txt").write_text(f"2\na.png {cam}\nb.png {cam}\n")
    with raises("lists b.png but there is no such image"):
        load_scene(tmp_path)
    (tmp_path / "x_par.txt").write_text(f"3\na.png {cam}\n")
    with raises("declares 3 images but holds 1"):
        load_scene(tmp_path)
    (tmp_path / "x_par.txt").write_text(f"1\na.png {cam}\n")
    assert len(load_scene(tmp_path / "x_par.txt", normalize=False)) == 1
