"""The fast (PyTorch) marching cubes against the reference (blocks + PyMCubes): same meshes, same properties."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
import torch
from scipy.spatial import cKDTree

from backend.meshing import TorchSdf, choose_method, marching_cubes_blocks, signed_volume, vertex_normals
from backend.meshing.torch_mc import _CORNERS, _edge_corners, case_table, marching_cubes_torch

BOX = np.array([[-1.0, -1.0, -1.0], [1.0, 1.0, 1.0]])


def sphere(x: torch.Tensor) -> torch.Tensor:
    return x.norm(dim=-1) - 0.5


def torus(x: torch.Tensor) -> torch.Tensor:
    q = torch.stack([torch.sqrt(x[:, 0] ** 2 + x[:, 1] ** 2) - 0.5, x[:, 2]], -1)
    return q.norm(dim=-1) - 0.2


def box(x: torch.Tensor) -> torch.Tensor:
    """Exact SDF of a box with half sizes (0.5, 0.35, 0.25), turned about z so its faces cut the lattice."""
    c, s = np.cos(0.3), np.sin(0.3)
    rot = torch.tensor([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]], dtype=x.dtype, device=x.device)
    q = (x @ rot).abs() - torch.tensor([0.5, 0.35, 0.25], dtype=x.dtype, device=x.device)
    return q.clamp_min(0).norm(dim=-1) + q.max(dim=-1).values.clamp_max(0)


SHAPES: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {"sphere": sphere, "torus": torus, "box": box}


def area(v: np.ndarray, f: np.ndarray) -> float:
    v = v.astype(np.float64)
    return float(np.linalg.norm(np.cross(v[f[:, 1]] - v[f[:, 0]], v[f[:, 2]] - v[f[:, 0]]), axis=1).sum() / 2)


def edge_use(f: np.ndarray) -> np.ndarray:
    """How many faces use each undirected edge."""
    e = np.sort(np.concatenate([f[:, [0, 1]], f[:, [1, 2]], f[:, [2, 0]]]), 1)
    return np.unique(e, axis=0, return_counts=True)[1]


def assert_same_mesh(va: np.ndarray, fa: np.ndarray, vb: np.ndarray, fb: np.ndarray, tol: float) -> None:
    """Same vertices (each within ``tol`` of exactly one of the other's) and the same oriented triangles."""
    assert len(va) == len(vb) and len(fa) == len(fb), (len(va), len(vb), len(fa), len(fb))
    dist, match = cKDTree(vb).query(va)
    assert float(dist.max()) <= tol, f"a vertex is {dist.max()} from the other mesh's nearest"
    assert len(np.unique(match)) == len(vb), "vertices do not match one to one"

    def canonical(f: np.ndarray) -> np.ndarray:
        f = np.asarray(f, dtype=np.int64)
        k = np.argmin(f, axis=1)
        rolled = np.stack([f[np.arange(len(f)), (k + i) % 3] for i in range(3)], 1)  # keeps the orientation
        return rolled[np.lexsort(rolled.T[::-1])]

    np.testing.assert_array_equal(canonical(match[fa]), canonical(fb))


def test_case_table_is_consistent() -> None:
    tris, counts = case_table()
    assert tris.shape == (256, 5, 3) and counts[0] == 0 and counts[255] == 0
    edges = _edge_corners()
    for case in range(1, 255):
        inside = np.array([case >> k & 1 for k in range(8)])
        used = tris[case, :counts[case]]
        assert counts[case] > 0 and np.all(tris[case, counts[case]:] == -1)
        # every vertex lies on an edge whose two corners are on opposite sides
        assert np.all(inside[edges[used, 0]] != inside[edges[used, 1]]), case
        # and every sign-changing edge of the cube carries a vertex
        crossing = {e for e in range(12) if inside[edges[e, 0]] != inside[edges[e, 1]]}
        assert set(used.reshape(-1).tolist()) == crossing, case
    # edges join corners one step apart along their axis
    np.testing.assert_array_equal(_CORNERS[edges[:, 1]] - _CORNERS[edges[:, 0]], np.eye(3, dtype=np.int64)[edges[:, 2]])


def test_random_field_gives_pymcubes_mesh_exactly() -> None:
    """A rough random field (every case occurs, many ambiguous cubes), no skipping: the very same triangles."""
    rng = np.random.default_rng(1)
    n = 23
    vol = rng.normal(size=(n, n, n)).astype(np.float32)
    vol[rng.random(vol.shape) < 0.02] = 0.0  # exact zeros: vertices on lattice points, welded like the reference

    def lookup(p: np.ndarray) -> np.ndarray:
        i = np.rint(p).astype(np.int64)
        return vol[i[:, 0], i[:, 1], i[:, 2]]

    grid_box = np.array([[0.0] * 3, [n - 1.0] * 3])
    v_ref, f_ref = marching_cubes_blocks(lookup, grid_box, n, block=9, skip_empty=False, method="reference")
    v_fast, f_fast = marching_cubes_blocks(lookup, grid_box, n, skip_empty=False, method="fast")
    assert len(f_ref) > 1000
    assert_same_mesh(v_fast, f_fast, v_ref, f_ref, tol=1e-5)


@pytest.mark.parametrize("name", list(SHAPES))
def test_analytic_shapes_match_the_reference(name: str) -> None:
    fn = TorchSdf(SHAPES[name], "cpu")
    res = 72
    voxel = 2.0 / (res - 1)
    v_ref, f_ref = marching_cubes_blocks(fn, BOX, res, block=32, method="reference")
    v, f = marching_cubes_blocks(fn, BOX, res, method="fast")
    assert v.dtype == np.float32 and f.dtype == np.int32 and v.shape[1] == 3 and f.shape[1] == 3
    assert_same_mesh(v, f, v_ref, f_ref, tol=1e-4 * voxel)
    assert np.all(edge_use(f) == 2), "not watertight"
    assert signed_volume(v, f) > 0, "faces point inward"
    n = vertex_normals(v, f)
    eps = 0.25 * voxel
    outside = SHAPES[name](torch.from_numpy(v + eps * n)).numpy()
    inside = SHAPES[name](torch.from_numpy(v - eps * n)).numpy()
    assert float(np.mean(outside > inside)) > 0.99, "normals do not face out"
    assert area(v, f) == pytest.approx(area(v_ref, f_ref), rel=0.01)


def test_uneven_box_crop_and_empty() -> None:
    """A box whose sides are not whole coarse cells, a crop through the surface, and a box with no surface."""
    fn = TorchSdf(torus, "cpu")
    crop = np.array([[-0.9, -0.15, -0.6], [0.83, 0.97, 0.41]])
    for res in (37, 50):
        v_ref, f_ref = marching_cubes_blocks(fn, crop, res, block=16, method="reference")
        v, f = marching_cubes_blocks(fn, crop, res, method="fast")
        assert len(f) > 0
        assert_same_mesh(v, f, v_ref, f_ref, tol=1e-5)
        assert np.all(v >= crop[0] - 1e-6) and np.all(v <= crop[1] + 1e-6)
    v, f = marching_cubes_blocks(fn, np.array([[0.85, 0.85, 0.85], [1, 1, 1]]), 32, method="fast")
    assert v.shape == (0, 3) and f.shape == (0, 3)


def test_slabs_weld_into_the_same_mesh() -> None:
    """Slab-by-slab meshing (a few coarse cells per slab) gives the one-slab mesh, still closed."""
    v1, f1 = marching_cubes_torch(torus, BOX, 61)
    v2, f2 = marching_cubes_torch(torus, BOX, 61, slab_cells=3 * 16 * 16)  # 3 coarse cells per slab
    assert_same_mesh(v2, f2, v1, f1, tol=0.0)
    assert np.all(edge_use(f2) == 2)


def test_progress_and_lipschitz_skipping_reaches_one() -> None:
    seen: list[float] = []
    calls: list[int] = []

    def counted(x: torch.Tensor) -> torch.Tensor:
        calls.append(len(x))
        return sphere(x)

    v, f = marching_cubes_torch(counted, BOX, 128, progress=seen.append, chunk=2**16)
    assert seen and seen[-1] == pytest.approx(1.0) and seen == sorted(seen)
    # each needed sample once: no more than the reference's sparse evaluation (about 29% of 128^3 here)
    assert sum(calls) < 0.3 * 128**3, f"evaluated {sum(calls)} samples"
    assert len(f) > 0


def test_method_choice() -> None:
    assert choose_method(lambda p: p[:, 0], "auto") == "reference"
    assert choose_method(TorchSdf(sphere, "cpu"), "auto") == "reference"
    assert choose_method(TorchSdf(sphere, "cpu"), "fast") == "fast"
    with pytest.raises(ValueError):
        choose_method(TorchSdf(sphere, "cpu"), "gpu")
    # a TorchSdf serves the reference with NumPy arrays
    out = TorchSdf(sphere, "cpu")(np.zeros((3, 3), np.float32))
    assert out.dtype == np.float32 and np.allclose(out, -0.5)


def test_neus_field_extraction_matches_reference() -> None:
    """The real field (random hash-grid table, sphere-initialised MLP) through extract_mesh: both paths agree."""
    from backend.extract import Frame, extract_mesh
    from backend.field import FieldConfig, HashGridConfig, NeuSField

    torch.manual_seed(0)
    field = NeuSField(FieldConfig(grid=HashGridConfig(n_levels=8, n_features=2, log2_table_size=14,
                                                      finest_resolution=256)))
    with torch.no_grad():  # bumps on the sphere: the grid's features reach the SDF
        field.encoding.embeddings.normal_(0.0, 0.3)
        field.sdf_layers[0].weight[:, 3:].normal_(0.0, 0.02)
    frame = Frame(np.eye(4))
    kw = {"box": BOX, "device": "cpu", "colors": False}
    v_ref, f_ref, _ = extract_mesh(field, frame, 48, method="reference", **kw)
    v, f, _ = extract_mesh(field, frame, 48, method="fast", **kw)
    assert len(f) > 1000
    assert_same_mesh(v, f, v_ref, f_ref, tol=1e-5)


@pytest.mark.gpu
def test_gpu_matches_reference() -> None:
    """On CUDA, "auto" takes the fast path; its mesh equals the reference's (float32 SDF on both)."""
    fn = TorchSdf(torus, "cuda")
    assert choose_method(fn) == "fast"
    res = 160
    v_ref, f_ref = marching_cubes_blocks(fn, BOX, res, method="reference")
    v, f = marching_cubes_blocks(fn, BOX, res)
    assert_same_mesh(v, f, v_ref, f_ref, tol=1e-4 * 2 / (res - 1))
    assert np.all(edge_use(f) == 2) and signed_volume(v, f) > 0
