"""Meshes from signed distance fields: the sample lattice (:mod:`.grid`), marching cubes in memory-bounded blocks
with PyMCubes (:mod:`.blocks`, the reference path) or in PyTorch over the surface cells only (:mod:`.torch_mc`, the
fast path), and mesh files (:mod:`.mesh_io`). Nothing here imports torch at import time.
"""

from .blocks import METHODS, SdfFn, TorchSdf, choose_method, marching_cubes_blocks
from .grid import GridSpec
from .mesh_io import read_ply, signed_volume, vertex_normals, weld, write_ply
from .torch_mc import case_table, marching_cubes_torch

__all__ = ["METHODS", "GridSpec", "SdfFn", "TorchSdf", "case_table", "choose_method", "marching_cubes_blocks",
           "marching_cubes_torch", "read_ply", "signed_volume", "vertex_normals", "weld", "write_ply"]
