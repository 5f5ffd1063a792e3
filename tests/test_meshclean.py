"""Mesh clean-up (backend/meshclean.py) on synthetic meshes with known parts: a sphere on a plane, a cube standing on
it, a shell on the region's boundary, floaters, parts only one camera sees, a mesh with no plane; the connected
parts against scipy's; and the Stanford bunny (flat base, no support plane) from ../shared/data."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from backend import meshclean
from backend.meshclean import Cameras, CleanOptions, Region

ROOT = Path(__file__).resolve().parents[1]

# ---------------------------------------------------------------------------------------------------------------
# synthetic meshes


def grid(size: float, n: int, z: float = 0.0, flip: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """A square of side ``size`` centred on the z axis at height ``z``: (n+1)^2 vertices, 2 n^2 triangles facing +z
    (-z with ``flip``)."""
    t = np.linspace(-size / 2, size / 2, n + 1)
    x, y = np.meshgrid(t, t, indexing="ij")
    v = np.stack([x.ravel(), y.ravel(), np.full(x.size, z)], axis=1)
    i = np.arange(n)[:, None] * (n + 1) + np.arange(n)[None, :]
    a, b, c, d = i.ravel(), i.ravel() + n + 1, i.ravel() + n + 2, i.ravel() + 1
    f = np.concatenate([np.stack([a, b, c], 1), np.stack([a, c, d], 1)])
    return v, f[:, ::-1] if flip else f


def uv_sphere(radius: float, center: tuple[float, float, float], n_lat: int = 24, n_lon: int = 48
              ) -> tuple[np.ndarray, np.ndarray]:
    """A closed latitude-longitude sphere: two poles and (n_lat - 1) rings of n_lon vertices."""
    theta = np.linspace(0, np.pi, n_lat + 1)[1:-1]
    phi = np.linspace(0, 2 * np.pi, n_lon, endpoint=False)
    th, ph = np.meshgrid(theta, phi, indexing="ij")
    ring = np.stack([np.sin(th) * np.cos(ph), np.sin(th) * np.sin(ph), np.cos(th)], -1).reshape(-1, 3)
    v = np.concatenate([[[0, 0, 1]], ring, [[0, 0, -1]]]) * radius + np.asarray(center)
    faces = []
    j = np.arange(n_lon)
    faces += [np.stack([np.zeros(n_lon, int), 1 + j, 1 + (j + 1) % n_lon], 1)]
    for r in range(n_lat - 2):
        a, b = 1 + r * n_lon + j, 1 + r * n_lon + (j + 1) % n_lon
        c, d = a + n_lon, b + n_lon
        faces += [np.stack([a, c, d], 1), np.stack([a, d, b], 1)]
    last = 1 + (n_lat - 2) * n_lon
    faces += [np.stack([last + j, np.full(n_lon, len(v) - 1), last + (j + 1) % n_lon], 1)]
    return v, np.concatenate(faces)


def box(lo: tuple[float, ...], hi: tuple[float, ...], n: int) -> tuple[np.ndarray, np.ndarray]:
    """A closed box with each side an n x n grid (welded edges)."""
    parts = []
    unit_v, unit_f = grid(2.0, n, z=1.0)
    for axis in range(3):
        for sign in (1.0, -1.0):
            v = unit_v.copy()
            v[:, 2] *= sign
            v = np.roll(v, axis + 1, axis=1) if axis < 2 else v  # the face's normal along ``axis``
            parts.append((v, unit_f[:, ::-1] if sign < 0 else unit_f))
    v, f = merge(*parts)
    lo_a, hi_a = np.asarray(lo, float), np.asarray(hi, float)
    return weld(lo_a + (v + 1) / 2 * (hi_a - lo_a), f)


def merge(*meshes: tuple[np.ndarray, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    vs, fs, off = [], [], 0
    for v, f in meshes:
        vs.append(v)
        fs.append(f + off)
        off += len(v)
    return np.concatenate(vs).astype(np.float64), np.concatenate(fs).astype(np.int64)


def weld(v: np.ndarray, f: np.ndarray, decimals: int = 6) -> tuple[np.ndarray, np.ndarray]:
    _, first, inverse = np.unique(np.round(v, decimals), axis=0, return_index=True, return_inverse=True)
    return v[first], inverse.ravel()[f]


def look_at(eye: tuple[float, ...], target: tuple[float, ...], up: tuple[float, ...] = (0, 0, 1)) -> np.ndarray:
    """(4, 4) OpenCV camera-to-world at ``eye`` looking at ``target`` (x right, y down, z forward)."""
    eye_a = np.asarray(eye, float)
    z = np.asarray(target, float) - eye_a
    z /= np.linalg.norm(z)
    x = np.cross(z, up)
    x /= np.linalg.norm(x)
    m = np.eye(4)
    m[:3, :3] = np.stack([x, np.cross(z, x), z], 1)
    m[:3, 3] = eye_a
    return m


def cameras(c2ws: list[np.ndarray], focal: float = 600.0, size: tuple[int, int] = (640, 480)) -> Cameras:
    K = np.array([[focal, 0, size[0] / 2 - 0.5], [0, focal, size[1] / 2 - 0.5], [0, 0, 1]])
    return Cameras(np.repeat(K[None], len(c2ws), 0), np.stack(c2ws), np.tile(size, (len(c2ws), 1)))


def ring(n: int = 12, radius: float = 4.0, height: float = 2.0, target: tuple[float, ...] = (0, 0, 0.3)) -> Cameras:
    """Cameras all round the origin, above the ground, looking at ``target``."""
    a = np.linspace(0, 2 * np.pi, n, endpoint=False)
    return cameras([look_at((radius * np.cos(t), radius * np.sin(t), height), target) for t in a])


def kept_rows(before: np.ndarray, after: np.ndarray) -> np.ndarray:
    """(len(before),) bool: which vertices of ``before`` are still in ``after`` (exact coordinates)."""
    seen = {tuple(p) for p in np.asarray(after, np.float64)}
    return np.array([tuple(p) in seen for p in np.asarray(before, np.float64)])


# ---------------------------------------------------------------------------------------------------------------
# connected parts


def test_face_components_match_scipy() -> None:
    sparse = pytest.importorskip("scipy.sparse")
    csgraph = pytest.importorskip("scipy.sparse.csgraph")
    rng = np.random.default_rng(3)
    # many parts of different sizes, vertex order shuffled so labels are not in any convenient order
    meshes = [uv_sphere(0.1 + 0.1 * rng.random(), tuple(rng.random(3) * 10), 4 + k % 7, 6 + k % 9) for k in range(40)]
    meshes.append(grid(3.0, 60))
    v, f = merge(*meshes)
    perm = rng.permutation(len(v))
    f = np.argsort(perm)[f]
    v = v[perm]
    labels = meshclean.face_components(len(v), f)
    edges = np.concatenate([f[:, [0, 1]], f[:, [1, 2]]])
    adj = sparse.coo_matrix((np.ones(len(edges)), (edges[:, 0], edges[:, 1])), shape=(len(v), len(v)))
    _, ref = csgraph.connected_components(adj, directed=False)
    ref_faces = ref[f[:, 0]]
    assert labels.max() + 1 == len(np.unique(ref_faces)) == 41
    # the same partition: each of our labels maps to exactly one reference label and back
    pairs = np.unique(np.stack([labels, ref_faces], 1), axis=0)
    assert len(pairs) == 41


# ---------------------------------------------------------------------------------------------------------------
# steps


def test_floater_removed_and_a_second_large_part_kept() -> None:
    obj = uv_sphere(0.5, (0, 0, 0))
    second = uv_sphere(0.3, (1.5, 0, 0))  # 36 % of the object's area: a real part
    floater = uv_sphere(0.05, (0, 2.0, 0.5), 8, 12)
    v, f = merge(obj, second, floater)
    colors = (np.arange(len(v))[:, None] % 256 * np.ones((1, 3))).astype(np.uint8)
    v2, f2, c2, report = meshclean.clean_mesh(v, f, colors, options=CleanOptions(min_part=0.05))
    assert report["removed"] == {"floaters": len(floater[1])}
    assert len(f2) == len(obj[1]) + len(second[1])
    assert np.all(np.linalg.norm(v2 - [0, 2.0, 0.5], axis=1) > 0.2)  # nothing of the floater left
    # colours follow their vertices
    assert c2 is not None and len(c2) == len(v2)
    idx = {tuple(p): i for i, p in enumerate(v)}
    assert all((colors[idx[tuple(p)]] == c).all() for p, c in zip(v2[::37], c2[::37]))


def test_boundary_shell_removed_object_kept() -> None:
    """The unit training sphere closes the field's volume: a shell on it (and a cap with an inward lip that is
    mostly on the boundary) goes; the object inside stays whole."""
    region = Region(sphere_center=np.zeros(3), sphere_radius=1.0)
    obj = uv_sphere(0.4, (0, 0, 0))
    shell = uv_sphere(0.999, (0, 0, 0), 40, 80)
    # a lower cap on the boundary with a short lip bent inward (the lip's faces are off the band)
    cap_v, cap_f = uv_sphere(1.0, (0, 0, 0), 40, 80)
    low = cap_v[:, 2] < -0.6
    cap_f = cap_f[low[cap_f].all(1)]
    rim = np.unique(cap_f)[np.isclose(cap_v[np.unique(cap_f), 2], cap_v[np.unique(cap_f), 2].max())]
    lip_v = cap_v[rim] * [0.95, 0.95, 1.0]
    order = np.argsort(np.arctan2(cap_v[rim, 1], cap_v[rim, 0]))
    rim, lip_v = rim[order], lip_v[order]
    k = np.arange(len(rim))
    lip_idx = len(cap_v) + k
    lip_f = np.concatenate([np.stack([rim[k], rim[(k + 1) % len(k)], lip_idx[k]], 1),
                            np.stack([rim[(k + 1) % len(k)], lip_idx[(k + 1) % len(k)], lip_idx[k]], 1)])
    cap = (np.concatenate([cap_v, lip_v]), np.concatenate([cap_f, lip_f]))
    v, f = merge(obj, shell, cap)
    v2, f2, _, report = meshclean.clean_mesh(v, f, None, region=region, options=CleanOptions(floaters=False))
    assert report["removed"]["boundary_shell"] == len(shell[1]) + len(cap[1]), report
    assert report["steps"]["boundary_shell"]["parts"] >= 2
    assert len(f2) == len(obj[1]) and kept_rows(obj[0], v2).all()


def test_shell_on_the_region_box_and_crop() -> None:
    """An oriented region box: the mesh is cut to it, and a sheet lying on its top face goes."""
    rot = np.array([[np.cos(0.5), -np.sin(0.5), 0], [np.sin(0.5), np.cos(0.5), 0], [0, 0, 1]])
    matrix = np.eye(4)
    matrix[:3, :3] = rot @ np.diag([1.0, 1.5, 1.0])
    matrix[:3, 3] = [0.2, -0.1, 0.3]
    region = Region(box=matrix)
    obj = uv_sphere(0.5, tuple(matrix[:3, 3]))
    top_v, top_f = grid(1.6, 32, z=0.999)  # in box coordinates: just under the top face
    top_v = top_v @ matrix[:3, :3].T + matrix[:3, 3]
    outside = uv_sphere(0.3, tuple(matrix[:3, 3] + [0, 0, 3.0]))  # above the box
    straddle = uv_sphere(0.3, tuple(matrix[:3, 3] + rot @ [0.9, 0, 0]))  # half out through a side
    v, f = merge(obj, (top_v, top_f), outside, straddle)
    v2, f2, _, report = meshclean.clean_mesh(v, f, None, region=region, options=CleanOptions(floaters=False))
    assert report["removed"]["boundary_shell"] >= len(top_f), report
    assert report["removed"]["outside_region"] > len(outside[1]), report  # and part of the straddling sphere
    assert kept_rows(obj[0], v2).all()
    local = (v2 - matrix[:3, 3]) @ np.linalg.inv(matrix[:3, :3]).T
    assert np.abs(local).max() <= 1.0 + 1e-9
    assert not kept_rows(top_v, v2).any()


def test_part_seen_by_one_camera_removed() -> None:
    """Eight cameras see the object; one more sees only a part high above it (removed); two more see a part below
    (kept: two views are enough)."""
    ring8 = ring(8, radius=4.0, height=0.0, target=(0, 0, 0))
    extra = [look_at((0, -4, 3), (0, 0, 3)), look_at((-4, 0, -3), (0, 0, -3)), look_at((4, 0.1, -3), (0, 0, -3))]
    cams = Cameras(np.concatenate([ring8.K, cameras(extra).K]), np.concatenate([ring8.c2w, np.stack(extra)]),
                   np.concatenate([ring8.sizes, cameras(extra).sizes]))
    obj = uv_sphere(0.5, (0, 0, 0))
    one = uv_sphere(0.3, (0, 0, 3))
    two = uv_sphere(0.3, (0, 0, -3))
    counts = meshclean.view_counts(np.array([[0, 0, 0], [0, 0, 3], [0, 0, -3.0]]), cams)
    assert counts.tolist() == [8, 1, 2]
    v, f = merge(obj, one, two)
    v2, f2, _, report = meshclean.clean_mesh(v, f, None, cameras=cams, options=CleanOptions(floaters=False))
    assert report["removed"] == {"unseen": len(one[1])}, report
    assert kept_rows(obj[0], v2).all() and kept_rows(two[0], v2).all() and not kept_rows(one[0], v2).any()


# ---------------------------------------------------------------------------------------------------------------
# support plane


def test_sphere_on_plane_plane_removed_sphere_kept_within_tolerance() -> None:
    table = grid(4.0, 80)  # edge 0.05
    underside = grid(4.0, 20, z=-0.1, flip=True)  # the table's thickness, on the far side from the cameras
    sphere = uv_sphere(0.5, (0.3, -0.2, 0.5), 32, 64)
    v, f = merge(table, underside, sphere)
    cams = ring(12)
    v2, f2, _, report = meshclean.clean_mesh(v, f, None, cameras=cams,
                                             options=CleanOptions(remove_plane=True, min_views=0))
    plane = report["plane"]
    assert plane["found"], report
    assert abs(abs(plane["normal"][2]) - 1) < 1e-6 and plane["normal"][2] > 0  # towards the cameras
    tol = plane["tolerance"]
    assert tol <= 0.01 * np.linalg.norm(v.max(0) - v.min(0)) + 1e-12
    assert not kept_rows(table[0], v2).any() and not kept_rows(underside[0], v2).any()
    # the sphere is kept except within the tolerance of the plane
    keep = kept_rows(sphere[0], v2)
    assert keep[sphere[0][:, 2] > tol].all()
    low_faces = (sphere[0][sphere[1]][:, :, 2] <= tol).all(1).sum()
    assert report["removed"] == {"support_plane": len(table[1]) + len(underside[1]) + low_faces, "floaters": 0}
    # a cap of height tol is 2.5 % of the sphere's area (the latitude rings cut it at 2.2 %)
    assert meshclean.face_areas(v2, f2).sum() >= 0.97 * meshclean.face_areas(*sphere).sum()


def test_cube_standing_on_plane_keeps_its_walls() -> None:
    """A flat-bottomed object: only the part within the tolerance of the plane goes, its walls stay."""
    table = grid(4.0, 80)
    cube = box((-0.4, -0.4, 0.0), (0.4, 0.4, 0.8), 16)  # edge 0.05; its bottom lies on the table
    v, f = merge(table, cube)
    v2, f2, _, report = meshclean.clean_mesh(v, f, None, cameras=ring(12),
                                             options=CleanOptions(remove_plane=True, min_views=0))
    tol = report["plane"]["tolerance"]
    assert report["plane"]["found"] and tol < 0.06
    cube_v = cube[0]
    assert kept_rows(cube_v, v2)[cube_v[:, 2] > tol].all()  # nothing above the tolerance is lost
    # the walls (4 x 0.8 x 0.8) and the top (0.8 x 0.8) lose at most a strip of the tolerance's height
    area = meshclean.face_areas(v2, f2).sum()
    assert 5 * 0.64 - 4 * 0.8 * tol - 1e-9 <= area <= 5 * 0.64 + 1e-9, (area, tol)
    assert not kept_rows(table[0][np.abs(table[0][:, :2]).max(1) > 0.45], v2).any()


def test_plane_found_from_up_without_cameras_and_a_wall_is_not_preferred() -> None:
    """With ``up`` given, the ground is chosen over a larger back wall; the wall stays."""
    ground = grid(3.0, 60)
    wall_v, wall_f = grid(4.0, 80, z=0.0)
    wall_v = wall_v[:, [0, 2, 1]] + [0, 1.6, 2.0]  # a 4 x 4 wall behind, standing on the ground's back edge
    sphere = uv_sphere(0.4, (0, 0, 0.4))
    v, f = merge(ground, (wall_v, wall_f), sphere)
    v2, f2, _, report = meshclean.clean_mesh(v, f, None, options=CleanOptions(remove_plane=True, up=(0, 0, 1),
                                                                              min_part=0.01))
    assert report["plane"]["found"] and report["plane"]["pass"] == "up", report["plane"]
    assert report["plane"]["normal"][2] > 0.999
    assert kept_rows(wall_v, v2)[wall_v[:, 2] > 0.1].all()
    assert not kept_rows(ground[0], v2).any()


def test_mesh_without_plane_untouched() -> None:
    """A sphere and a lumpy blob, seen from all round: "no plane found", every face kept."""
    v, f = uv_sphere(0.5, (0, 0, 0.5), 32, 64)
    rng = np.random.default_rng(0)
    bv, bf = uv_sphere(0.3, (1.2, 0, 0.4), 24, 48)
    d = bv - [1.2, 0, 0.4]
    bv = bv + d * (0.15 * np.sin(5 * d[:, [0]] / 0.3) * np.cos(4 * d[:, [1]] / 0.3) + 0.02 * rng.random((len(d), 1)))
    v, f = merge((v, f), (bv, bf))
    v2, f2, _, report = meshclean.clean_mesh(v, f, None, cameras=ring(12), options=CleanOptions(remove_plane=True))
    assert not report["plane"]["found"] and report["plane"]["why"] == "no plane found", report["plane"]
    assert report["removed"].get("support_plane", 0) == 0 and len(f2) == len(f)
    assert "no plane found" in meshclean.removed_summary(report)
    np.testing.assert_array_equal(v2, v)


def test_lone_cube_keeps_its_base() -> None:
    """A box alone (cameras all round and above): its flat faces hold a lot of area, but nothing reaches past what
    stands on them, so none is a support plane."""
    v, f = box((-0.5, -0.5, 0.0), (0.5, 0.5, 0.6), 12)
    v2, f2, _, report = meshclean.clean_mesh(v, f, None, cameras=ring(12), options=CleanOptions(remove_plane=True))
    assert not report["plane"]["found"] and len(f2) == len(f), report["plane"]


def test_bunny_without_plane_untouched(data_dir: Path) -> None:
    """The Stanford bunny (a real scan with a flat, cut-off base): no support plane, nothing removed."""
    path = data_dir / "meshes" / "stanford-bunny.obj"
    if not path.is_file():
        pytest.skip(f"{path} not found")
    verts, faces = [], []
    for line in path.read_text().splitlines():
        if line.startswith("v "):
            verts.append([float(x) for x in line.split()[1:4]])
        elif line.startswith("f "):
            faces.append([int(t.split("/")[0]) - 1 for t in line.split()[1:4]])
    v, f = np.asarray(verts), np.asarray(faces)
    lo, hi = v.min(0), v.max(0)
    c = (lo + hi) / 2
    r = np.linalg.norm(hi - lo)
    cams = cameras([look_at(c + r * np.array([np.cos(t), 1.0, np.sin(t)]), c, up=(0, 1, 0))
                    for t in np.linspace(0, 2 * np.pi, 10, endpoint=False)])
    _, f2, _, report = meshclean.clean_mesh(v, f, None, cameras=cams, options=CleanOptions(remove_plane=True,
                                                                                          floaters=False))
    assert not report["plane"]["found"], report["plane"]
    assert len(f2) == len(f)


# ---------------------------------------------------------------------------------------------------------------
# everything together


def test_clean_final_mesh_with_a_training_frame() -> None:
    """The call the trainer makes: region from ``to_world`` and ``roi``, the scene's cameras; input coordinates
    scaled and shifted (a DTU-like frame in millimetres)."""
    scale, center = 200.0, np.array([10.0, -40.0, 600.0])
    to_world = np.eye(4)
    to_world[:3, :3] *= scale
    to_world[:3, 3] = center
    obj = uv_sphere(0.3, (0, 0, 0))
    shell = uv_sphere(0.9995, (0, 0, 0), 30, 60)
    floater = uv_sphere(0.03, (0.5, 0.5, 0.2), 6, 8)
    v, f = merge(obj, shell, floater)
    v = v * scale + center
    cams = ring(10, radius=4.0 * scale, height=1.0 * scale, target=(0, 0, 0))
    cams = Cameras(cams.K, cams.c2w + np.pad(center[:, None], ((0, 1), (3, 0)))[None], cams.sizes)
    roi = np.array([[-0.95, -0.95, -0.95], [0.95, 0.95, 0.95]])  # cuts the shell away, except near the corners
    v2, f2, c2, report = meshclean.clean_final_mesh(v.astype(np.float32), f.astype(np.int32), None, K=cams.K,
                                                    c2w=cams.c2w, sizes=cams.sizes, to_world=to_world, roi=roi)
    assert f2.dtype == np.int32 and v2.dtype == np.float32 and c2 is None
    assert report["removed"]["outside_region"] > 0.25 * len(shell[1])
    assert report["removed"]["outside_region"] + report["removed"]["boundary_shell"] == len(shell[1]), report
    assert report["removed"]["floaters"] == len(floater[1]), report
    assert report["faces_after"] == len(f2) == len(obj[1])
    assert "floaters" in meshclean.removed_summary(report)


def test_nothing_left_keeps_the_mesh() -> None:
    """A mesh that is all shell: the clean-up would remove everything, so the mesh comes back as it was."""
    v, f = uv_sphere(1.0, (0, 0, 0))
    v2, f2, _, report = meshclean.clean_mesh(v, f, None, region=Region(sphere_center=np.zeros(3), sphere_radius=1.0))
    assert len(f2) == len(f) and report["removed"] == {} and "every face" in report["kept_whole"]
    assert report["would_remove"]["boundary_shell"] == len(f)


# ---------------------------------------------------------------------------------------------------------------
# python -m backend extract --clean / --no-clean / --remove-plane


def _backend(*args: str) -> tuple[int, list[dict[str, Any]], str]:
    proc = subprocess.run([sys.executable, "-m", "backend", *args, "--json"], cwd=ROOT, capture_output=True,
                          text=True, timeout=900, stdin=subprocess.DEVNULL)
    return proc.returncode, [json.loads(ln) for ln in proc.stdout.splitlines() if ln.startswith("{")], proc.stderr


@pytest.mark.slow
@pytest.mark.data
def test_extract_cleans_by_default_without_masks(data_dir: Path, tmp_path: Path) -> None:
    """Two-step trainings on eight DTU views without masks (the field is still its initial sphere): ``extract``
    cleans by default and reports what it removed; a field whose surface is all shell on the training sphere is
    kept whole with a warning rather than emptied; ``--remove-plane`` on a sphere finds no plane."""
    from dataclasses import replace

    from backend.data import load_scene
    from backend.data.export import write_neus

    scene = load_scene(data_dir / "dtu_scan65", max_image_size=96, normalize=False).subset(range(0, 48, 6))
    write_neus(replace(scene, masks=None), tmp_path / "capture")
    jobs = {}
    for name, radius in (("sphere", "0.5"), ("shell", "1.5")):
        jobs[name] = tmp_path / name
        code, _, err = _backend("train", "--data", str(tmp_path / "capture"), "--out", str(jobs[name]), "--preset",
                                "preview", "--steps", "2", "--mesh-every", "0", "--final-resolution", "32",
                                "--device", "cpu", "--set", f"sphere_init_radius={radius}")
        assert code == 0, err[-3000:]

    def extract(job: Path, *flags: str) -> tuple[dict[str, Any], list[dict[str, Any]], dict[str, np.ndarray]]:
        out = tmp_path / f"{job.name}{''.join(flags)}.npz"
        code, msgs, err = _backend("extract", "--checkpoint", str(job), "--resolution", "40", "--device", "cpu",
                                   "--out", str(out), *flags)
        assert code == 0, err[-3000:]
        from backend.protocol import read_snapshot

        return next(m for m in msgs if m["type"] == "done"), msgs, read_snapshot(out)

    done, msgs, mesh = extract(jobs["sphere"])
    assert any(m["type"] == "stage" and m["name"] == "clean" for m in msgs)
    assert set(done["removed"]) == {"outside_region", "boundary_shell", "unseen", "floaters"}, done
    plain, _, plain_mesh = extract(jobs["sphere"], "--no-clean")
    assert plain["removed"] == {} and plain["n_faces"] > 1000
    # the sphere is seen by every camera and lies well inside the region: nothing of it goes
    assert sum(done["removed"].values()) == 0 and done["n_faces"] == plain["n_faces"], done
    np.testing.assert_array_equal(mesh["faces"], plain_mesh["faces"])
    done, msgs, _ = extract(jobs["sphere"], "--remove-plane")
    assert done["removed"]["support_plane"] == 0 and done["n_faces"] == plain["n_faces"]
    assert any(m["type"] == "warning" and "no plane found" in m["message"] for m in msgs)
    # all shell: the clean-up would remove everything, so it keeps the mesh and says so
    shell_plain, _, shell_mesh = extract(jobs["shell"], "--no-clean")
    region = meshclean.region_from_frame(scene.to_world)
    d = region.inside_distance(shell_mesh["vertices"])
    assert np.abs(d).max() < 0.01 * region.size()  # the surface is the training sphere itself
    done, msgs, _ = extract(jobs["shell"])
    assert done["n_faces"] == shell_plain["n_faces"] and done["removed"] == {}
    assert any(m["type"] == "warning" and "every face" in m["message"] for m in msgs)
