"""The region of interest without masks (backend/region.py): the object the cameras look at, not the room."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from backend.normalize import auto_normalization
from backend.region import focus_point, frame_radius, object_region
from backend.scene import Scene

W, H, F = 640, 480, 560.0  # images and focal length in pixels (a 60-degree horizontal view)


UP = np.array([0.0, 0.0, 1.0])


def look_at(eye: np.ndarray, target: np.ndarray, up: np.ndarray = UP) -> np.ndarray:
    """(4, 4) camera-to-world, OpenCV axes (x right, y down, z forward), looking from ``eye`` at ``target``."""
    z = target - eye
    z = z / np.linalg.norm(z)
    x = np.cross(z, up)
    x = x / np.linalg.norm(x)
    y = np.cross(z, x)
    m = np.eye(4)
    m[:3, 0], m[:3, 1], m[:3, 2], m[:3, 3] = x, y, z, eye
    return m


def room_capture(n: int = 24, elevation: float = 1.2, radius: float = 3.0, wander: int = 0, seed: int = 0
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """A phone walked round an object on a table in a room: cameras on a ring looking at the object (the last
    ``wander`` of them looking at a wall instead), sparse points on the object (a ball of radius 0.5 at the origin),
    the table top (z = -0.5, 2.5 wide), the floor (z = -2) and four walls 6 away.

    Returns:
        c2w (N, 4, 4), K (N, 3, 3), sizes (N, 2), points (P, 3), and the point groups by name.
    """
    rng = np.random.default_rng(seed)
    a = np.linspace(0, 2 * np.pi, n, endpoint=False)
    eyes = np.stack([radius * np.cos(a), radius * np.sin(a), np.full(n, elevation)], 1)
    c2w = np.stack([look_at(e, np.array([0.0, 0.0, -0.1]) + rng.normal(0, 0.05, 3)) for e in eyes])
    for i in range(n - wander, n):
        c2w[i] = look_at(eyes[i], eyes[i] * np.array([2.0, 2.0, 0.0]))  # outward, at the wall behind it
    K = np.tile(np.array([[F, 0, W / 2], [0, F, H / 2], [0, 0, 1.0]]), (n, 1, 1))
    sizes = np.tile([W, H], (n, 1))
    ball = rng.normal(size=(3000, 3))
    ball = 0.5 * ball / np.linalg.norm(ball, axis=1, keepdims=True)
    table = np.c_[rng.uniform(-1.25, 1.25, (1500, 2)), np.full(1500, -0.5)]
    table = table[np.linalg.norm(table[:, :2], axis=1) > 0.5]
    floor = np.c_[rng.uniform(-6, 6, (1500, 2)), np.full(1500, -2.0)]
    walls = []
    for axis in (0, 1):
        for side in (-6.0, 6.0):
            p = np.c_[rng.uniform(-6, 6, 1000), rng.uniform(-2, 3, 1000)]
            w = np.zeros((1000, 3))
            w[:, axis], w[:, 1 - axis], w[:, 2] = side, p[:, 0], p[:, 1]
            walls.append(w)
    groups = {"ball": ball, "table": table, "floor": floor, "walls": np.concatenate(walls)}
    return c2w, K, sizes, np.concatenate(list(groups.values())), groups


def inside(box: np.ndarray, pts: np.ndarray) -> np.ndarray:
    return np.all((pts >= box[0]) & (pts <= box[1]), axis=1)


@pytest.mark.parametrize("wander", [0, 4])
def test_region_is_the_object_and_its_table_not_the_room(wander: int) -> None:
    c2w, K, sizes, pts, groups = room_capture(wander=wander)
    r = object_region(c2w, K, sizes, pts)
    assert r["converged"] and r["source"] == "points"
    assert np.linalg.norm(np.asarray(r["focus"]) - [0, 0, -0.1]) < 0.1  # cameras looking away do not move it
    box = r["box"]
    assert inside(box, groups["ball"]).mean() > 0.97  # the object
    assert inside(box, groups["walls"]).mean() == 0 and inside(box, groups["floor"]).mean() < 0.02  # not the room
    assert np.all(box[1] - box[0] < 4.0)  # at most the table top's extent, padded
    cams = np.linalg.norm(c2w[:, :3, 3] - r["center"], axis=1)
    assert cams.min() > r["radius"]  # the cameras stay outside
    if wander:
        w = np.asarray(r["camera_weights"])
        assert w[-wander:].max() < 0.2 < w[:-wander].min()


def test_frame_radius_is_what_the_photos_frame_at_the_object() -> None:
    c2w, K, sizes, _, _ = room_capture()
    d = np.linalg.norm(c2w[:, :3, 3] - [0, 0, -0.1], axis=1).mean()
    half_diagonal = np.hypot(W / 2, H / 2) / F
    assert frame_radius(c2w[:, :3, 3], c2w[:, :3, 2], K, sizes, np.array([0, 0, -0.1])) == pytest.approx(
        d * half_diagonal, rel=0.02)


def test_cameras_that_do_not_converge_fall_back_to_the_points() -> None:
    """A facade scanned by walking past it: parallel axes, no focus; the region is the points' bulk, said so."""
    n = 12
    c2w = np.stack([look_at(np.array([x, -5.0, 1.0]), np.array([x, 0.0, 1.0])) for x in np.linspace(-3, 3, n)])
    K = np.tile(np.array([[F, 0, W / 2], [0, F, H / 2], [0, 0, 1.0]]), (n, 1, 1))
    rng = np.random.default_rng(1)
    facade = np.c_[rng.uniform(-4, 4, 2000), rng.normal(0, 0.05, 2000), rng.uniform(0, 3, 2000)]
    focus, _ = focus_point(c2w[:, :3, 3], c2w[:, :3, 2])
    assert focus is None
    r = object_region(c2w, K, np.tile([W, H], (n, 1)), facade)
    assert not r["converged"] and r["source"] == "all_points"
    assert inside(r["box"], facade).mean() > 0.7  # the part most photos see (the ends are in few of them)
    assert object_region(c2w, K, np.tile([W, H], (n, 1)), None)["source"] == "none"


def test_training_normalizes_to_the_object_and_warns_when_cameras_do_not_converge() -> None:
    """The automatic normalization of a capture without masks uses the same region: the unit sphere bounds the
    object and its table, not the room (before, the sparse points' bulk took the walls in)."""
    c2w, K, sizes, pts, groups = room_capture()
    images = [np.zeros((H, W, 3), dtype=np.uint8)] * len(c2w)
    scene = Scene(names=[f"{i:03d}.jpg" for i in range(len(c2w))], images=images, K=K, c2w=c2w, points=pts)
    to_world, roi, info = auto_normalization(scene)
    assert info["method"] == "sparse_points" and info["converged"] and not info["warnings"]
    radius = to_world[0, 0]
    assert 0.5 < radius < 2.0  # the ball and its table top, not the 6-wide room
    assert np.linalg.norm(to_world[:3, 3]) < 0.6
    parallel = replace(scene, c2w=np.stack([look_at(np.array([x, -5.0, 1.0]), np.array([x, 0.0, 1.0]))
                                            for x in np.linspace(-3, 3, len(c2w))]))
    _, _, info = auto_normalization(parallel)
    assert not info["converged"] and any("do not converge" in w for w in info["warnings"])


def test_a_region_box_beside_the_object_is_warned_about() -> None:
    """A box the user drew where no sparse points are: a warning that says to move it over the object."""
    from backend.capture_files import box_matrix
    from backend.normalize import normalization_from_box

    c2w, K, sizes, pts, _ = room_capture()
    images = [np.zeros((H, W, 3), dtype=np.uint8)] * len(c2w)
    scene = Scene(names=[f"{i:03d}.jpg" for i in range(len(c2w))], images=images, K=K, c2w=c2w, points=pts)
    _, info = normalization_from_box(scene, box_matrix([-0.6, -0.6, -0.6], [0.6, 0.6, 0.6]))
    assert info["warnings"] == []
    _, info = normalization_from_box(scene, box_matrix([1.6, 1.6, 0.5], [2.0, 2.0, 0.9]))  # empty air
    assert any("move and scale the box" in w for w in info["warnings"])
