"""Pixels out of ``sensor_msgs/Image`` and ``sensor_msgs/CompressedImage``, and how sharp they are.

Colour comes out as (H, W, 3) uint8 RGB (what nerfstudio and the FIND interface read); depth as
(H, W) uint16 millimetres, make-scene's ``depths/*.png`` format, with 0 where the sensor had no
reading. Rows are cut at ``step`` (drivers may pad them) and big-endian data is honoured.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

from find3d.errors import DataError, Find3dError

#: colour encoding -> (channels, whether the channel order is BGR)
COLOUR_ENCODINGS: dict[str, tuple[int, bool]] = {
    "rgb8": (3, False), "bgr8": (3, True), "rgba8": (4, False), "bgra8": (4, True), "mono8": (1, False),
}
#: depth encoding -> (numpy dtype, metres per unit); some drivers label raw millimetre depth mono16
DEPTH_ENCODINGS: dict[str, tuple[str, float]] = {"16UC1": ("u2", 1e-3), "mono16": ("u2", 1e-3), "32FC1": ("f4", 1.0)}
_MAX_MM = np.iinfo(np.uint16).max


def is_depth(msg: Any) -> bool:
    """Whether an Image message carries depth (by encoding), so that colour and depth topics can be told apart."""
    return getattr(msg, "encoding", None) in DEPTH_ENCODINGS


def is_compressed_depth(msg: Any) -> bool:
    """``compressed_depth_image_transport`` streams share the CompressedImage type but are not colour."""
    return "compresseddepth" in str(getattr(msg, "format", "")).lower()


class Fixes(NamedTuple):
    """What a bad image's message tells its sender to do: a recording and a live request differ."""

    size: str  # the image's size fields or data are inconsistent
    encoding: str  # its encoding is not one find3d reads


#: a recorded topic (ingest-bag, the mapping node's streams)
RECORDING = Fixes(size="the message is truncated or its driver is broken; re-record the topic.",
                  encoding="republish the topic in one of them (e.g. with image_proc), or pass --image-topic "
                           "with another topic.")


def pixel_rows(msg: Any, topic: str, channels: int, dtype: np.dtype, error: type[Find3dError] = DataError,
               fix: str = RECORDING.size) -> np.ndarray:
    """(H, W, channels) view of an Image's data, cutting each row at ``step``; inconsistent sizes raise ``error``."""
    height, width, step = int(msg.height), int(msg.width), int(msg.step)
    row_bytes = width * channels * dtype.itemsize
    data = np.asarray(msg.data, dtype=np.uint8)
    what = f"{topic}: a {msg.encoding} image of {width}x{height}"
    if height == 0 or width == 0:
        raise error(f"{what} has no pixels; {fix}")
    if step < row_bytes:
        raise error(f"{what} has step {step} < {row_bytes} bytes per row; {fix}")
    if data.size < step * height:
        raise error(f"{what} has {data.size} bytes of data, needs step x height = {step * height}: it is "
                    f"truncated; {fix}")
    rows = data[: step * height].reshape(height, step)[:, :row_bytes]
    return np.ascontiguousarray(rows).view(dtype).reshape(height, width, channels)


def decode_colour(msg: Any, topic: str, error: type[Find3dError] = DataError, fixes: Fixes = RECORDING) -> np.ndarray:
    """(H, W, 3) uint8 RGB of an Image (rgb8, bgr8, rgba8, bgra8, mono8) or CompressedImage (jpeg, png);
    a bad one raises ``error`` whose message ends with ``fixes``."""
    if hasattr(msg, "format"):
        return _decode_compressed(msg, topic)
    encoding = str(msg.encoding)
    if encoding not in COLOUR_ENCODINGS:
        raise error(f"{topic}: image encoding {encoding!r} is not supported (find3d reads "
                    f"{', '.join(COLOUR_ENCODINGS)}); {fixes.encoding}")
    channels, bgr = COLOUR_ENCODINGS[encoding]
    pixels = pixel_rows(msg, topic, channels, np.dtype(np.uint8), error, fixes.size)
    if channels == 1:
        return np.repeat(pixels, 3, axis=2)
    rgb = pixels[..., 2::-1] if bgr else pixels[..., :3]  # drop alpha; reverse BGR
    return np.ascontiguousarray(rgb)


def _decode_compressed(msg: Any, topic: str) -> np.ndarray:
    import cv2

    fmt = str(msg.format).lower()
    if is_compressed_depth(msg) or not any(kind in fmt for kind in ("jpeg", "jpg", "png")):
        raise DataError(f"{topic}: CompressedImage format {msg.format!r} is not a jpeg or png colour image; "
                        "record the colour stream as image_transport 'compressed' (jpeg/png) or raw.")
    bgr = cv2.imdecode(np.asarray(msg.data, dtype=np.uint8), cv2.IMREAD_COLOR)
    if bgr is None:
        raise DataError(f"{topic}: a {msg.format!r} CompressedImage does not decode; the message is corrupt; "
                        "re-record the topic.")
    return np.ascontiguousarray(bgr[..., ::-1])


def decode_depth_mm(msg: Any, topic: str) -> np.ndarray:
    """(H, W) uint16 millimetres of a 16UC1 (mm) or 32FC1 (m) depth Image; 0 where there is no reading."""
    encoding = str(msg.encoding)
    if encoding not in DEPTH_ENCODINGS:
        raise DataError(f"{topic}: depth encoding {encoding!r} is not 16UC1 (mm) or 32FC1 (m); republish the "
                        f"depth in one of them, or pass --depth-topic none to ingest colour only.")
    kind, metres_per_unit = DEPTH_ENCODINGS[encoding]
    dtype = np.dtype(kind).newbyteorder(">" if msg.is_bigendian else "<")
    depth = pixel_rows(msg, topic, 1, dtype)[..., 0]
    if kind == "u2":
        return depth.astype(np.uint16)
    # Invalid float readings are NaN, ±inf or <= 0 by convention (REP-118); 0 means "unknown" in the scene.
    mm = np.round(depth.astype(np.float64) * (1000.0 * metres_per_unit))
    valid = np.isfinite(mm) & (mm > 0)
    return np.where(valid, np.clip(mm, 0, _MAX_MM), 0).astype(np.uint16)


def sharpness(rgb: np.ndarray) -> float:
    """Variance of the Laplacian of the grey image: low for motion blur and defocus, high for crisp edges."""
    import cv2

    grey = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    return float(cv2.Laplacian(grey, cv2.CV_64F).var())
