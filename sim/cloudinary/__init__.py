"""A faithful stand-in for Cloudinary's Admin, Search and Upload APIs and its delivery URLs."""

from sim.cloudinary.images import generated_image
from sim.cloudinary.server import CloudinarySim, RecordedRequest, SimAsset

__all__ = ["CloudinarySim", "RecordedRequest", "SimAsset", "generated_image"]
