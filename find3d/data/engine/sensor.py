"""What a real camera delivers instead of the renderer's exact pixels: make-scene's ``--sensor`` models.

- ``ideal``: the render as it is (exact z-depth, lossless PNG colour), make-scene's original output.
- ``rgbd``: an active-stereo / structured-light depth camera (Intel RealSense D400, Kinect class)
  aligned to the colour image; colour stays the render (a robot's camera on fixed exposure). Per
  frame, on the exact z-depth z (metres) and the image's focal length f (px):

  * axial noise, as disparity noise of a stereo pair: d = f·b / z with baseline ``baseline`` (D435:
    50 mm) gets Gaussian noise of ``subpixel`` px RMS (Intel's D400 depth RMS error model,
    RMS_z = z²·subpixel / (f·b), "Tuning depth cameras for best performance", Intel RealSense
    white paper, 2019; typical subpixel 0.05-0.1 px on textured scenes), so σ_z grows with z² (at
    256 px, f = 246: 3 mm at 0.7 m, 8 mm at 1.1 m, 26 mm at 2 m); plus Nguyen et al.'s
    grazing-angle term 0.1 mm/√z · θ²/(π/2 − θ)² (θ: angle between the surface normal and the
    ray; "Modeling Kinect sensor noise for improved 3D reconstruction and tracking", 3DIMPVT 2012,
    whose Kinect fit σ_z = 1.2 mm + 1.9 mm/m²·(z − 0.4 m)² is of the same size at these ranges);
  * quantisation: disparity in steps of ``disparity_step`` px (Kinect v1: 1/8 px, Khoshelham and
    Elberink, "Accuracy and resolution of Kinect depth data", Sensors 2012), so depth in steps of
    z²·step / (f·b), then millimetres (the uint16 file);
  * lateral noise: each pixel reads the depth of a pixel offset by a Gaussian of ``lateral_px`` px
    (Nguyen et al.: σ_L ≈ 0.8 px for θ below 60°), which frays every depth edge;
  * flying pixels: along depth discontinuities (the 3x3 neighbourhood spans more than
    ``edge_jump`` relative depth), a share ``flying_share`` of the pixels read a mix α·z_near +
    (1 − α)·z_far, α uniform, of the neighbourhood's fore- and background (mixed pixels of
    time-of-flight cameras, the edge smear of stereo matching): points in mid-air between objects;
  * holes (0 = no reading): grazing surfaces (θ > ``grazing_deg``, the pattern is lost), dark
    surfaces (luma < ``dark_luma``: half of them), the projector's specular return off surfaces
    facing the camera (θ < ``specular_deg``: half of them; it saturates the IR image), random dropout
    ``dropout``, out of range (``min_range`` - ``max_range``; D435 min-Z ~0.28 m; 4 m here): a few %
    of the pixels on a tabletop.

- ``rgb``: a phone video or COLMAP capture: no depth at all, JPEG colour (quality ``jpeg_quality``)
  with the frame-to-frame auto-exposure and white-balance drift of a phone (per-frame log gains as a
  mean-reverting random walk: ``exposure`` stops of exposure, ``white_balance`` per channel, in
  linear light) and a little sensor noise.

Pose noise (any sensor, ``pose_noise`` metres, default 0): the poses written to transforms.json
drift as a SLAM or structure-from-motion run leaves them: a random walk over the frames in capture
order, with steps of ``pose_noise`` metres per axis and ``pose_noise`` radians per metre in
rotation (about each camera's centre). Renders, instance masks and the 3D ground truth stay exact.

Every draw comes from generators seeded by (seed, stream, frame): the same seed gives the same bytes.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np

SENSORS = ("ideal", "rgbd", "rgb")
_POSE_STREAM, _EXPOSURE_STREAM, _FRAME_STREAM = 2, 3, 4  # rng streams; make-scene uses 0 and 1


@dataclass(frozen=True)
class DepthCamera:
    """Parameters of the ``rgbd`` error model (module docstring)."""

    baseline: float = 0.05  # m, RealSense D435
    subpixel: float = 0.08  # px RMS disparity error
    disparity_step: float = 1 / 8  # px
    lateral_px: float = 0.8
    edge_jump: float = 0.05  # relative depth span of a 3x3 neighbourhood that makes a discontinuity
    flying_share: float = 0.6
    grazing_deg: float = 80.0
    dark_luma: float = 0.06
    specular_deg: float = 4.0
    dropout: float = 0.005
    min_range: float = 0.28  # m
    max_range: float = 4.0  # m


@dataclass(frozen=True)
class PhoneCamera:
    """Parameters of the ``rgb`` model (module docstring)."""

    exposure: float = 0.35  # stationary std of the log2 exposure gain (stops)
    white_balance: float = 0.05  # stationary std of each channel's log gain
    memory: float = 0.8  # AR(1) coefficient from frame to frame: auto-exposure adapts over a few frames
    noise: float = 1.5 / 255  # Gaussian sensor noise in [0, 1] units, before JPEG
    jpeg_quality: int = 90


@dataclass(frozen=True)
class Observation:
    """One frame as the sensor delivers it."""

    rgb: np.ndarray  # (H, W, 3) uint8
    depth: np.ndarray | None  # (H, W) float z-depth in metres, 0 = no reading; None = no depth sensor


class Sensor:
    """A ``kind`` of camera (``SENSORS``) over ``frames`` views of one seed's scene."""

    def __init__(self, kind: str, seed: int, frames: int, pose_noise: float = 0.0,
                 depth_camera: DepthCamera = DepthCamera(), phone: PhoneCamera = PhoneCamera()) -> None:
        if kind not in SENSORS:
            raise ValueError(f"sensor {kind!r}: expected one of {', '.join(SENSORS)}")
        self.kind, self.seed = kind, seed
        self.depth_camera, self.phone = depth_camera, phone
        self.drift = pose_drift(np.random.default_rng([seed, _POSE_STREAM]), frames, pose_noise)
        self.gains = (exposure_gains(np.random.default_rng([seed, _EXPOSURE_STREAM]), frames, phone)
                      if kind == "rgb" else None)

    @property
    def has_depth(self) -> bool:
        return self.kind != "rgb"

    @property
    def image_suffix(self) -> str:
        return ".jpg" if self.kind == "rgb" else ".png"

    def observe(self, index: int, rgb: np.ndarray, depth: np.ndarray, hit: np.ndarray, focal: float) -> Observation:
        """Frame ``index`` from the render's exact ``rgb`` (uint8), z-depth (m) and ``hit`` (a surface was hit)."""
        exact = np.where(hit, depth, 0.0)  # keeps the render's float32: ideal output stays byte for byte
        if self.kind == "ideal":
            return Observation(rgb, exact)
        rng = np.random.default_rng([self.seed, _FRAME_STREAM, index])
        if self.kind == "rgbd":
            return Observation(rgb, noisy_depth(exact, rgb, focal, rng, self.depth_camera))
        assert self.gains is not None
        return Observation(phone_colour(rgb, self.gains[index], rng, self.phone.noise), None)

    def reported_pose(self, index: int, c2w: np.ndarray) -> np.ndarray:
        """The camera-to-world pose the capture reports for frame ``index`` (``c2w`` itself without pose noise)."""
        drift = self.drift[index]
        if not drift.any():
            return c2w
        out = c2w.copy()
        out[:3, :3] = _rotation(drift[3:]) @ c2w[:3, :3]
        out[:3, 3] = c2w[:3, 3] + drift[:3]
        return out

    def encode_image(self, rgb: np.ndarray) -> bytes:
        """The image file's bytes: PNG, or JPEG for a phone."""
        from PIL import Image

        buffer = io.BytesIO()
        if self.kind == "rgb":
            Image.fromarray(rgb).save(buffer, format="JPEG", quality=self.phone.jpeg_quality)
        else:
            Image.fromarray(rgb).save(buffer, format="PNG")
        return buffer.getvalue()


# ------------------------------------------------------------------------------------------- depth
def noisy_depth(depth: np.ndarray, rgb: np.ndarray, focal: float, rng: np.random.Generator,
                camera: DepthCamera = DepthCamera()) -> np.ndarray:
    """The ``rgbd`` model (module docstring) applied to an exact z-depth map in metres (0 = nothing hit)."""
    depth = depth.astype(np.float64)
    hit = depth > 0
    theta = incidence_angle(depth, focal)
    z = _lateral(depth, rng, camera.lateral_px)
    z = _flying_pixels(z, rng, camera.edge_jump, camera.flying_share)
    fb = focal * camera.baseline
    valid = z > 0
    disparity = np.where(valid, fb / np.where(valid, z, 1.0), 0.0)
    disparity = disparity + rng.normal(0.0, camera.subpixel, depth.shape)
    disparity = np.round(disparity / camera.disparity_step) * camera.disparity_step
    safe = np.maximum(disparity, camera.disparity_step)
    z = np.where(valid, fb / safe, 0.0)
    # Nguyen et al.'s angular term: grows steeply towards grazing incidence.
    angular = 1e-4 / np.sqrt(np.maximum(z, 1e-3)) * theta**2 / np.maximum(np.pi / 2 - theta, 1e-2) ** 2
    z = z + rng.normal(0.0, 1.0, depth.shape) * angular
    luma = rgb.astype(np.float64) @ np.array([0.299, 0.587, 0.114]) / 255.0
    holes = ~hit | ~valid
    holes |= theta > np.radians(camera.grazing_deg)
    holes |= (luma < camera.dark_luma) & (rng.random(depth.shape) < 0.5)
    holes |= (theta < np.radians(camera.specular_deg)) & (rng.random(depth.shape) < 0.5)
    holes |= rng.random(depth.shape) < camera.dropout
    holes |= (z < camera.min_range) | (z > camera.max_range)
    return np.where(holes, 0.0, z)


def incidence_angle(depth: np.ndarray, focal: float) -> np.ndarray:
    """(H, W) angle in radians between each pixel's ray and its surface normal (from the depth map's
    back-projection; pi/2 where the normal is undefined, e.g. on empty pixels). Each tangent is the
    one-sided difference towards the neighbour of nearer depth, so that a depth edge does not make the
    surfaces on both sides look grazing."""
    height, width = depth.shape
    v, u = np.mgrid[0:height, 0:width].astype(np.float64) + 0.5
    rays = np.stack([(u - width / 2) / focal, (v - height / 2) / focal, np.ones_like(u)], axis=-1)
    points = rays * depth[..., None]
    du, dv = (_smooth_difference(points, depth, axis) for axis in (1, 0))
    normal = np.cross(du, dv)
    norm = np.linalg.norm(normal, axis=-1) * np.linalg.norm(rays, axis=-1)
    cosine = np.abs((normal * rays).sum(-1)) / np.where(norm > 0, norm, 1.0)
    cosine = np.where((norm > 0) & (depth > 0), cosine, 0.0)
    return np.arccos(np.clip(cosine, 0.0, 1.0))


def _smooth_difference(points: np.ndarray, depth: np.ndarray, axis: int) -> np.ndarray:
    """Forward or backward difference of ``points`` along ``axis``, whichever changes depth less."""
    padded_points = np.pad(points, [(1, 1) if a == axis else (0, 0) for a in range(3)], mode="edge")
    padded_depth = np.pad(depth, [(1, 1) if a == axis else (0, 0) for a in range(2)], mode="edge")
    size = depth.shape[axis]
    ahead, behind = (np.take(padded_points, np.arange(size) + k, axis=axis) for k in (2, 0))
    depth_ahead, depth_behind = (np.take(padded_depth, np.arange(size) + k, axis=axis) for k in (2, 0))
    forward = np.abs(depth_ahead - depth) <= np.abs(depth - depth_behind)
    return np.where(forward[..., None], ahead - points, points - behind)


def _lateral(depth: np.ndarray, rng: np.random.Generator, sigma_px: float) -> np.ndarray:
    """Each pixel reads the depth at its position plus a Gaussian offset (nearest pixel, clamped)."""
    height, width = depth.shape
    rows = np.arange(height)[:, None] + np.rint(rng.normal(0.0, sigma_px, depth.shape)).astype(int)
    cols = np.arange(width)[None, :] + np.rint(rng.normal(0.0, sigma_px, depth.shape)).astype(int)
    return depth[np.clip(rows, 0, height - 1), np.clip(cols, 0, width - 1)]


def _flying_pixels(depth: np.ndarray, rng: np.random.Generator, jump: float, share: float) -> np.ndarray:
    """Mix fore- and background depth at a ``share`` of the pixels on discontinuities (module docstring)."""
    padded = np.pad(depth, 1, mode="edge")
    height, width = depth.shape
    window = np.stack([padded[r:r + height, c:c + width] for r in range(3) for c in range(3)])
    present = window > 0
    near = np.where(present, window, np.inf).min(axis=0)
    far = np.where(present, window, 0.0).max(axis=0)
    edge = (depth > 0) & np.isfinite(near) & (far > near * (1.0 + jump))
    mix = edge & (rng.random(depth.shape) < share)
    alpha = rng.random(depth.shape)
    return np.where(mix, alpha * np.where(np.isfinite(near), near, 0.0) + (1.0 - alpha) * far, depth)


# ------------------------------------------------------------------------------------------ colour
def exposure_gains(rng: np.random.Generator, frames: int, phone: PhoneCamera) -> np.ndarray:
    """(frames, 3) linear-light gains: exposure (common) times white balance (per channel), each a
    mean-reverting (AR(1)) random walk in log space with the stationary std of ``phone``."""
    innovation = np.sqrt(1.0 - phone.memory**2)
    state = np.zeros(4)
    scale = np.array([phone.exposure * np.log(2.0), *[phone.white_balance] * 3])
    gains = np.empty((frames, 3))
    for index in range(frames):
        draw = rng.normal(0.0, 1.0, 4) * scale
        state = draw if index == 0 else phone.memory * state + innovation * draw
        gains[index] = np.exp(state[0] + state[1:])
    return gains


def phone_colour(rgb: np.ndarray, gain: np.ndarray, rng: np.random.Generator, noise: float) -> np.ndarray:
    """``rgb`` (uint8 sRGB) with a per-channel linear-light ``gain`` and Gaussian sensor noise."""
    srgb = rgb.astype(np.float64) / 255.0
    linear = np.where(srgb <= 0.04045, srgb / 12.92, ((srgb + 0.055) / 1.055) ** 2.4)
    linear = np.clip(linear * gain, 0.0, 1.0)
    out = np.where(linear <= 0.0031308, linear * 12.92, 1.055 * linear ** (1 / 2.4) - 0.055)
    out = out + rng.normal(0.0, noise, out.shape)
    return np.clip(np.round(out * 255.0), 0, 255).astype(np.uint8)


# -------------------------------------------------------------------------------------------- poses
def pose_drift(rng: np.random.Generator, frames: int, step: float) -> np.ndarray:
    """(frames, 6) cumulative drift per frame: translation (m) and rotation vector (rad), a random walk."""
    if step <= 0:
        return np.zeros((frames, 6))
    steps = rng.normal(0.0, step, (frames, 6))
    steps[0] = 0.0  # the first frame anchors the map, as in SLAM
    return np.cumsum(steps, axis=0)


def _rotation(vector: np.ndarray) -> np.ndarray:
    """Rodrigues: the rotation matrix of a rotation vector."""
    angle = float(np.linalg.norm(vector))
    if angle < 1e-12:
        return np.eye(3)
    k = vector / angle
    cross = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
    return np.eye(3) + np.sin(angle) * cross + (1 - np.cos(angle)) * cross @ cross
