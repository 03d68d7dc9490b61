"""Pixels to model input: modality and VOI LUTs, MONOCHROME1, colour, frames, scaling, tiling,
whole-slide levels.

Imports nothing of ours: it is given de-identified datasets and returns images with the exact
transform back to source pixels.
"""

from apolo_node.imaging.display import ImagingError, frame_attributes, modality_values, to_rgb8, voi, window
from apolo_node.imaging.model_image import ModelImage, Transform
from apolo_node.imaging.prepare import fit, model_images, pixel_spacing, select_frames
from apolo_node.imaging.slides import VL_WHOLE_SLIDE, choose_level, is_slide
from apolo_node.imaging.tiling import TILINGS, Tile, plan

__all__ = [
    "TILINGS",
    "VL_WHOLE_SLIDE",
    "ImagingError",
    "ModelImage",
    "Tile",
    "Transform",
    "choose_level",
    "fit",
    "frame_attributes",
    "is_slide",
    "modality_values",
    "model_images",
    "pixel_spacing",
    "plan",
    "select_frames",
    "to_rgb8",
    "voi",
    "window",
]
