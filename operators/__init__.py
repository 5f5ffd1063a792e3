"""Operators (F3 search finds them through the Add > Mesh from Photos menu): each module has a CLASSES tuple."""

from . import environment, import_capture, reconstruct

CLASSES = (*reconstruct.CLASSES, *import_capture.CLASSES, *environment.CLASSES)
