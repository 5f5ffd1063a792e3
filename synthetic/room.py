"""The room a background capture puts its objects in, and the region its ground truth is cut to (numpy only).

Everything is measured in the objects' bounding radius ``r`` (half the diagonal of their world bounding box) from an
*anchor*: the point on the table top straight under the centre of the objects' bounding box. The table top is the
plane through the objects' lowest point, so they rest on it. With the default :class:`RoomLayout`:

- table top 4 r x 3.5 r, 0.12 r thick, on four legs 3.5 r tall (the floor is 3.5 r below the table top);
- walls at 9 r (x) and 8 r (y) from the anchor, ceiling 7 r above the table top;
- a cabinet and a tall box standing against two walls, and a picture on a third (parallax at several depths);
- a ceiling panel light above the table and a window-like panel light on one wall.

:func:`region_box` is the box the ground truth is cut to (the objects' bounds grown by a margin, reaching below the
table top so that the table under the objects is inside); :func:`table_piece` is the part of the table top inside
it. :mod:`synthetic.room_scene` builds the room in Blender from these numbers.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: Lens (mm on a 36 mm sensor) of room captures unless another is asked for: about a phone's main camera.
ROOM_LENS_MM = 28.0
#: Room captures frame the objects' bounding sphere with this margin (1.05 for captures without a background):
#: the sphere spans two thirds of the narrower image side, the rest shows the table and the room.
ROOM_FIT_MARGIN = 1.5
#: In a room the ``sphere`` layout keeps to the directions above the table: a cap of this half-angle.
ROOM_SPHERE_CAP_DEG = 80.0
#: The region box reaches this far beyond the objects (and below the table top), in bounding radii.
REGION_MARGIN = 0.1

Box = tuple[np.ndarray, np.ndarray]


@dataclass(frozen=True)
class RoomLayout:
    """Sizes of the room in bounding radii, relative to the anchor (x, y horizontal, z up; see the module docstring).

    Attributes:
        table_half: half the table top's size along x and y.
        table_thickness: of the table top.
        table_height: from the floor to the table top.
        room_half: distance from the anchor to the walls along x and y.
        ceiling: height of the ceiling above the table top.
    """

    table_half: tuple[float, float] = (2.0, 1.75)
    table_thickness: float = 0.12
    table_height: float = 3.5
    room_half: tuple[float, float] = (9.0, 8.0)
    ceiling: float = 7.0

    def boxes(self) -> dict[str, Box]:
        """Solid parts as axis-aligned boxes ``(lo (3,), hi (3,))`` in anchor units: the table top, its legs and
        the furniture."""
        tx, ty = self.table_half
        floor = -self.table_height
        rx, ry = self.room_half
        out: dict[str, Box] = {"table_top": (np.array([-tx, -ty, -self.table_thickness]), np.array([tx, ty, 0.0]))}
        leg = 0.16
        for i, (sx, sy) in enumerate(((-1, -1), (1, -1), (1, 1), (-1, 1))):
            cx, cy = sx * (tx - 0.25), sy * (ty - 0.25)
            out[f"table_leg_{i}"] = (np.array([cx - leg / 2, cy - leg / 2, floor]),
                                     np.array([cx + leg / 2, cy + leg / 2, -self.table_thickness]))
        out["cabinet"] = (np.array([-4.5, ry - 1.6, floor]), np.array([0.5, ry, floor + 2.8]))
        out["tall_box"] = (np.array([rx - 1.8, -3.0, floor]), np.array([rx, -0.8, floor + 6.5]))
        out["picture"] = (np.array([-rx, -2.5, 0.5]), np.array([-rx + 0.08, 2.5, 4.0]))
        return out

    def walls(self) -> dict[str, np.ndarray]:
        """The room's inner faces as quads: name -> (4, 3) corners in anchor units, counter-clockwise seen from
        inside (normals point into the room)."""
        rx, ry = self.room_half
        lo, hi = -self.table_height, self.ceiling
        return {
            "floor": np.array([[-rx, -ry, lo], [rx, -ry, lo], [rx, ry, lo], [-rx, ry, lo]]),
            "ceiling": np.array([[-rx, -ry, hi], [-rx, ry, hi], [rx, ry, hi], [rx, -ry, hi]]),
            "wall_x_neg": np.array([[-rx, -ry, lo], [-rx, ry, lo], [-rx, ry, hi], [-rx, -ry, hi]]),
            "wall_x_pos": np.array([[rx, -ry, lo], [rx, -ry, hi], [rx, ry, hi], [rx, ry, lo]]),
            "wall_y_neg": np.array([[-rx, -ry, lo], [-rx, -ry, hi], [rx, -ry, hi], [rx, -ry, lo]]),
            "wall_y_pos": np.array([[-rx, ry, lo], [rx, ry, lo], [rx, ry, hi], [-rx, ry, hi]]),
        }

    def lights(self) -> dict[str, tuple[np.ndarray, np.ndarray, tuple[float, float]]]:
        """Panel lights: name -> (centre (3,), direction it shines (3,), size (x, y)) in anchor units."""
        rx, _ = self.room_half
        return {"ceiling_light": (np.array([0.0, 0.0, self.ceiling - 0.05]), np.array([0.0, 0.0, -1.0]),
                                  (5.0, 5.0)),
                "window_light": (np.array([-rx + 0.05, -4.5, 1.5]), np.array([1.0, 0.0, 0.0]), (4.0, 3.0))}

    def check_cameras(self, eyes: np.ndarray, min_height: float = 0.1, clearance: float = 0.3) -> None:
        """Raise ValueError unless every camera (E, 3) (anchor units) is above the table top by ``min_height``,
        inside the room and outside the furniture by ``clearance``."""
        eyes = np.asarray(eyes, dtype=np.float64).reshape(-1, 3)
        rx, ry = self.room_half
        low = np.flatnonzero(eyes[:, 2] < min_height)
        if len(low):
            raise ValueError(f"camera {low[0]} is {eyes[low[0], 2]:.2f} radii above the table top; room captures "
                             "need every camera above it (use a smaller cap, a higher ring or another layout)")
        out = np.flatnonzero((np.abs(eyes[:, 0]) > rx - clearance) | (np.abs(eyes[:, 1]) > ry - clearance)
                             | (eyes[:, 2] > self.ceiling - clearance))
        if len(out):
            raise ValueError(f"camera {out[0]} is {np.linalg.norm(eyes[out[0]]):.2f} radii from the objects, "
                             "outside the room; use a smaller distance")
        for name, (lo, hi) in self.boxes().items():
            inside = np.flatnonzero(np.all((eyes > lo - clearance) & (eyes < hi + clearance), axis=1))
            if len(inside):
                raise ValueError(f"camera {inside[0]} is inside the room's {name}; use a smaller distance")


def anchor_of(vertices: np.ndarray) -> tuple[np.ndarray, float]:
    """The anchor (3,) (on the plane of the lowest vertex, under the bounding-box centre) and the bounding radius
    of (V, 3) world vertices."""
    v = np.asarray(vertices, dtype=np.float64)
    lo, hi = v.min(0), v.max(0)
    return np.array([0.5 * (lo[0] + hi[0]), 0.5 * (lo[1] + hi[1]), lo[2]]), float(0.5 * np.linalg.norm(hi - lo))


def to_world(points: np.ndarray, anchor: np.ndarray, unit: float) -> np.ndarray:
    """(..., 3) anchor-unit points -> world coordinates."""
    return np.asarray(anchor, dtype=np.float64) + unit * np.asarray(points, dtype=np.float64)


def region_box(vertices: np.ndarray, margin: float = REGION_MARGIN) -> Box:
    """The region box of objects resting on the table (world coordinates): their bounding box grown by ``margin``
    bounding radii on every side, so it also reaches ``margin`` below the table top.

    Returns:
        box_min (3,), box_max (3,).
    """
    v = np.asarray(vertices, dtype=np.float64)
    _, unit = anchor_of(v)
    return v.min(0) - margin * unit, v.max(0) + margin * unit


def table_piece(box: Box, table_z: float, table_lo: np.ndarray, table_hi: np.ndarray, n: int = 8
                ) -> tuple[np.ndarray, np.ndarray]:
    """The table top inside a region box: the rectangle where the box's footprint overlaps the table top's, at
    height ``table_z`` (world coordinates), as an ``n`` x ``n`` grid of quads split into triangles facing up.

    Args:
        box: (box_min, box_max), each (3,); it must straddle ``table_z``.
        table_lo, table_hi: (2,) the table top's corners in x and y.

    Returns:
        vertices ((n + 1)^2, 3) float64, faces (2 n^2, 3) int64 (counter-clockwise seen from above).
    """
    lo = np.maximum(np.asarray(box[0][:2], float), np.asarray(table_lo, float))
    hi = np.minimum(np.asarray(box[1][:2], float), np.asarray(table_hi, float))
    if not (np.all(hi > lo) and box[0][2] < table_z < box[1][2]):
        raise ValueError("the region box does not cross the table top")
    xs, ys = np.linspace(lo[0], hi[0], n + 1), np.linspace(lo[1], hi[1], n + 1)
    gx, gy = np.meshgrid(xs, ys, indexing="xy")
    verts = np.stack([gx.ravel(), gy.ravel(), np.full(gx.size, float(table_z))], axis=1)
    i = np.arange(n)[None, :] + (n + 1) * np.arange(n)[:, None]  # lower-left corner of each quad
    i = i.ravel()
    faces = np.concatenate([np.stack([i, i + 1, i + n + 2], 1), np.stack([i, i + n + 2, i + n + 1], 1)])
    return verts, faces.astype(np.int64)
