"""A rigid transform that moves over time, sampled at stamps, and read at any stamp in between.

Used for every moving ``/tf`` edge and for pose topics. Between two samples the translation is
interpolated linearly and the rotation by slerp (constant angular velocity, as tf2 does); past
either end the end sample is held. Either way the nearest sample must lie within ``tolerance``: a
camera frame far from any pose is reported as having none rather than being given a guessed one.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from find3d.errors import DataError
from find3d.poses import pose_to_matrix


def checked(translation: np.ndarray, quaternion: np.ndarray, where: str) -> tuple[np.ndarray, np.ndarray]:
    """A recorded transform as float arrays; NaNs or an all-zero quaternion (a publisher bug) are a DataError."""
    translation, quaternion = np.asarray(translation, np.float64), np.asarray(quaternion, np.float64)
    if not (np.all(np.isfinite(translation)) and np.all(np.isfinite(quaternion))
            and np.linalg.norm(quaternion) > 1e-9):
        raise DataError(f"{where}: translation {translation.tolist()} and quaternion {quaternion.tolist()} are not "
                        "a rigid transform; fix the publisher and re-record.")
    return translation, quaternion


@dataclass
class PoseTrack:
    """Samples of one transform: add ``(stamp_ns, translation, quaternion xyzw)``, then read ``at(stamp)``."""

    name: str
    _samples: dict[int, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict, repr=False)
    _stamps: np.ndarray | None = field(default=None, repr=False)

    def add(self, stamp_ns: int, translation: np.ndarray, quaternion: np.ndarray) -> None:
        # A repeated stamp replaces the earlier sample (tf2 keeps the latest one too).
        self._samples[int(stamp_ns)] = checked(translation, quaternion, f"{self.name} at {stamp_ns} ns")
        self._stamps = None

    def __len__(self) -> int:
        return len(self._samples)

    def _finish(self) -> None:
        """Sort once after the samples are in (bags are read in log order, not stamp order)."""
        from scipy.spatial.transform import Rotation

        stamps = np.array(sorted(self._samples), dtype=np.int64)
        self._translations = np.stack([self._samples[int(s)][0] for s in stamps])
        quaternions = np.stack([self._samples[int(s)][1] for s in stamps])
        self._rotations = Rotation.from_quat(quaternions / np.linalg.norm(quaternions, axis=1, keepdims=True))
        # Every sample as a matrix once: most images fall exactly on (or are held at) a sample.
        self._matrices = np.tile(np.eye(4), (len(stamps), 1, 1))
        self._matrices[:, :3, :3] = self._rotations.as_matrix()
        self._matrices[:, :3, 3] = self._translations
        self._stamps = stamps

    def at(self, stamp_ns: int, tolerance_ns: int) -> np.ndarray | None:
        """(4, 4) transform at ``stamp_ns``; None when no sample lies within ``tolerance_ns`` of it."""
        if not self._samples:
            return None
        if self._stamps is None:
            self._finish()
        stamps = self._stamps
        assert stamps is not None
        after = int(np.searchsorted(stamps, stamp_ns, side="left"))
        if after < len(stamps) and stamps[after] == stamp_ns:
            return self._matrix(after)
        before = after - 1
        gaps = [abs(int(stamps[i]) - stamp_ns) for i in (before, after) if 0 <= i < len(stamps)]
        if min(gaps) > tolerance_ns:
            return None
        if before < 0:  # before the first sample: hold it
            return self._matrix(after)
        if after == len(stamps):  # after the last sample: hold it
            return self._matrix(before)
        return self._interpolate(before, after, stamp_ns)

    def _matrix(self, index: int) -> np.ndarray:
        return self._matrices[index].copy()

    def _interpolate(self, before: int, after: int, stamp_ns: int) -> np.ndarray:
        assert self._stamps is not None
        t0, t1 = int(self._stamps[before]), int(self._stamps[after])
        fraction = (stamp_ns - t0) / (t1 - t0)
        translation = (1.0 - fraction) * self._translations[before] + fraction * self._translations[after]
        r0, r1 = self._rotations[before], self._rotations[after]
        # slerp: the relative rotation, scaled along its axis (shortest arc: scipy returns angles <= pi).
        rotation = r0 * type(r0).from_rotvec((r0.inv() * r1).as_rotvec() * fraction)
        return pose_to_matrix(translation, rotation.as_quat())
