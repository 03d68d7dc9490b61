"""Pixels to model input: modality and VOI LUTs, MONOCHROME1, colour, frames, scaling.

Imports nothing of ours: it is given de-identified datasets and returns images with the exact
transform back to source pixels.
"""

from apolo_node.imaging.model_image import ModelImage, Transform

__all__ = ["ModelImage", "Transform"]
