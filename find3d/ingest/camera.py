"""Intrinsics and distortion of ``sensor_msgs/CameraInfo`` in nerfstudio's ``transforms.json`` terms.

ROS (like OpenCV) puts pixel *centres* at integer coordinates, so pixel (0, 0) spans [-0.5, 0.5];
nerfstudio (like COLMAP and OpenGL) casts a pixel's ray through its centre at +0.5, so pixel (0, 0)
spans [0, 1]. The principal point therefore moves by ``find3d.poses.PIXEL_CENTRE_OFFSET`` (half a
pixel): ``cx = K[0, 2] + 0.5``, ``cy = K[1, 2] + 0.5``; focal lengths and distortion are unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from find3d.errors import DataError
from find3d.poses import PIXEL_CENTRE_OFFSET


@dataclass(frozen=True)
class Intrinsics:
    """A pinhole camera with OpenCV distortion, in nerfstudio's pixel convention."""

    width: int
    height: int
    fx: float
    fy: float
    cx: float
    cy: float
    camera_model: str = "OPENCV"
    distortion: dict[str, float] = field(default_factory=dict)

    @classmethod
    def from_transforms(cls, meta: dict[str, Any]) -> Intrinsics:
        """The camera of a ``transforms.json`` (the inverse of ``to_transforms``)."""
        model = str(meta.get("camera_model", "OPENCV"))
        keys = ("k1", "k2", "k3", "k4") if model == "OPENCV_FISHEYE" else ("k1", "k2", "p1", "p2", "k3")
        return cls(width=int(meta["w"]), height=int(meta["h"]), fx=float(meta["fl_x"]), fy=float(meta["fl_y"]),
                   cx=float(meta["cx"]), cy=float(meta["cy"]), camera_model=model,
                   distortion={key: float(meta.get(key, 0.0)) for key in keys})

    def to_transforms(self) -> dict[str, Any]:
        """The camera keys of ``transforms.json`` (make-scene's: OPENCV, fl_x ... h, k1, k2, p1, p2)."""
        keys = {"camera_model": self.camera_model, "fl_x": self.fx, "fl_y": self.fy, "cx": self.cx, "cy": self.cy,
                "w": self.width, "h": self.height}
        return {**keys, **self.distortion}


def intrinsics_from_camera_info(msg: Any, topic: str) -> Intrinsics:
    """The colour camera's intrinsics from K and D (the raw, unrectified image the camera recorded)."""
    k = np.asarray(msg.k, dtype=np.float64).reshape(3, 3)
    fx, fy = float(k[0, 0]), float(k[1, 1])
    if not (np.all(np.isfinite(k)) and fx > 0 and fy > 0):
        raise DataError(f"{topic}: CameraInfo K = {k.ravel().tolist()} has no usable focal length (the camera "
                        "is uncalibrated); calibrate it (ros2 run camera_calibration cameracalibrator) and "
                        "re-record, or pass --camera-info-topic with the calibrated camera's info.")
    binning = (int(msg.binning_x), int(msg.binning_y))
    roi = msg.roi
    if max(binning) > 1 or int(roi.width) or int(roi.height):
        raise DataError(f"{topic}: CameraInfo uses binning {binning} / ROI {int(roi.width)}x{int(roi.height)}; "
                        "find3d reads full-resolution images only; record without binning or ROI.")
    camera_model, distortion = _distortion(str(msg.distortion_model), np.asarray(msg.d, dtype=np.float64), topic)
    return Intrinsics(width=int(msg.width), height=int(msg.height), fx=fx, fy=fy,
                      cx=float(k[0, 2]) + PIXEL_CENTRE_OFFSET, cy=float(k[1, 2]) + PIXEL_CENTRE_OFFSET,
                      camera_model=camera_model, distortion=distortion)


def _distortion(model: str, d: np.ndarray, topic: str) -> tuple[str, dict[str, float]]:
    """nerfstudio camera model and coefficients for a ROS distortion model.

    plumb_bob is OpenCV's (k1, k2, p1, p2, k3) = nerfstudio OPENCV; equidistant is OpenCV's fisheye
    (k1..k4) = OPENCV_FISHEYE. rational_polynomial fits OPENCV only when its denominator terms
    k4..k6 are zero: nerfstudio's k4 is a numerator term, so copying them would distort wrongly.
    """
    coefficients = [float(x) for x in d]
    if not np.all(np.isfinite(d)):
        raise DataError(f"{topic}: CameraInfo distortion {coefficients} is not finite; recalibrate the camera.")
    if model in ("plumb_bob", "rational_polynomial", "") or not any(coefficients):
        padded = [*coefficients, *[0.0] * 8][:8]
        if any(padded[5:8]) or len(coefficients) > 8:
            raise DataError(f"{topic}: rational_polynomial distortion with k4..k6 = {padded[5:8]} has no "
                            "nerfstudio camera model; rectify the images (image_proc) and ingest image_rect "
                            "with its camera_info.")
        k1, k2, p1, p2, k3 = padded[:5]
        return "OPENCV", {"k1": k1, "k2": k2, "p1": p1, "p2": p2, "k3": k3}
    if model == "equidistant":
        k1, k2, k3, k4 = [*coefficients, 0.0, 0.0, 0.0, 0.0][:4]
        return "OPENCV_FISHEYE", {"k1": k1, "k2": k2, "k3": k3, "k4": k4}
    raise DataError(f"{topic}: CameraInfo distortion model {model!r} is not plumb_bob, rational_polynomial or "
                    "equidistant; rectify the images (image_proc) and ingest image_rect with its camera_info.")
