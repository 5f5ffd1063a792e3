"""Operators (F3 search finds them through the Add > Mesh from Photos menu): each module has a CLASSES tuple."""

from . import capture, environment, import_capture, reconstruct, refine

CLASSES = (*reconstruct.CLASSES, *refine.CLASSES, *import_capture.CLASSES, *capture.CLASSES, *environment.CLASSES)
