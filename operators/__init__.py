"""Operators (F3 search finds them through the Add > Mesh from Photos menu): each module has a CLASSES tuple."""

from . import environment, reconstruct

CLASSES = (*reconstruct.CLASSES, *environment.CLASSES)
