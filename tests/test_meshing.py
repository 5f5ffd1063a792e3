"""Block-wise marching cubes, welding, orientation, PLY, and the silhouette rasterizer."""

from __future__ import annotations

import numpy as np
import pytest

from backend.meshing import marching_cubes_blocks, read_ply, signed_volume, vertex_normals, write_ply
from backend.raster import mask_iou, silhouette

BOX = np.array([[-1.0, -1.0, -1.0], [1.0, 1.0, 1.0]])


def sphere(p: np.ndarray) -> np.ndarray:
    return (np.linalg.norm(p, axis=1) - 0.5).astype(np.float32)


def two_spheres(p: np.ndarray) -> np.ndarray:
    a = np.linalg.norm(p - [0.5, 0, 0], axis=1) - 0.3
    b = np.linalg.norm(p + [0.5, 0, 0], axis=1) - 0.2
    return np.minimum(a, b).astype(np.float32)


def euler_characteristic(v: np.ndarray, f: np.ndarray) -> int:
    edges = np.sort(np.concatenate([f[:, [0, 1]], f[:, [1, 2]], f[:, [2, 0]]]), 1)
    return len(v) - len(np.unique(edges, axis=0)) + len(f)


def test_sphere_is_closed_outward_and_accurate() -> None:
    v, f = marching_cubes_blocks(sphere, BOX, 96, block=32)
    assert v.dtype == np.float32 and f.dtype == np.int32
    assert euler_characteristic(v, f) == 2, "blocks were not welded into one closed surface"
    assert signed_volume(v, f) == pytest.approx(4 / 3 * np.pi * 0.125, rel=0.01)
    n = vertex_normals(v, f)
    assert float((n * v).sum(1).min()) > 0, "a normal points into the sphere"
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 0.5, atol=2 / 95 * 0.1)


def test_blocks_give_the_same_mesh_as_one_volume() -> None:
    v1, f1 = marching_cubes_blocks(two_spheres, BOX, 80, block=17)
    v2, f2 = marching_cubes_blocks(two_spheres, BOX, 80, block=200)
    assert len(v1) == len(v2) and len(f1) == len(f2)
    np.testing.assert_allclose(np.sort(v1, axis=0), np.sort(v2, axis=0), atol=1e-5)
    assert euler_characteristic(v1, f1) == 4  # two closed spheres


def test_empty_blocks_are_skipped_without_losing_surface() -> None:
    calls: list[int] = []

    def counted(p: np.ndarray) -> np.ndarray:
        calls.append(len(p))
        return two_spheres(p)

    v, f = marching_cubes_blocks(counted, BOX, 128, block=48, skip_empty=True)
    evaluated = sum(calls)
    calls.clear()
    v2, f2 = marching_cubes_blocks(counted, BOX, 128, block=48, skip_empty=False)
    # vertices lie on edges whose ends are both near the surface, which the sparse pass evaluates exactly
    assert len(f) == len(f2)
    np.testing.assert_array_equal(np.sort(v, axis=0), np.sort(v2, axis=0))
    assert evaluated < 0.3 * sum(calls), f"evaluated {evaluated} of {sum(calls)} samples"


def test_cropped_box_and_no_surface() -> None:
    v, f = marching_cubes_blocks(sphere, np.array([[0.0, -1, -1], [1, 1, 1]]), 64)
    assert float(v[:, 0].min()) >= -1e-6
    v, f = marching_cubes_blocks(sphere, np.array([[0.6, 0.6, 0.6], [1, 1, 1]]), 32)
    assert len(v) == 0 and len(f) == 0


def test_ply_round_trip(tmp_path) -> None:  # noqa: ANN001
    v, f = marching_cubes_blocks(sphere, BOX, 24)
    c = np.random.default_rng(0).integers(0, 256, (len(v), 3)).astype(np.uint8)
    write_ply(str(tmp_path / "m.ply"), v, f, c)
    back = read_ply(str(tmp_path / "m.ply"))
    np.testing.assert_array_equal(back["vertices"], v)
    np.testing.assert_array_equal(back["faces"], f)
    np.testing.assert_array_equal(back["colors"], c)


def test_silhouette_of_a_sphere_is_a_disc() -> None:
    v, f = marching_cubes_blocks(sphere, BOX, 64)
    K = np.array([[200.0, 0, 63.5], [0, 200.0, 47.5], [0, 0, 1]])
    c2w = np.eye(4)
    c2w[2, 3] = -4.0  # camera on -z looking at the origin along +z
    sil = silhouette(v, f, K, c2w, 128, 96)
    yy, xx = np.mgrid[0:96, 0:128]
    r_px = 200.0 * 0.5 / np.sqrt(4.0**2 - 0.25)  # tangent cone of a sphere seen from distance 4
    disc = (xx - 63.5) ** 2 + (yy - 47.5) ** 2 <= r_px**2
    assert mask_iou(sil, disc) > 0.95
    behind = c2w.copy()
    behind[2, 3] = 4.0  # looking away from the sphere
    assert not silhouette(v, f, K, behind, 128, 96).any()
