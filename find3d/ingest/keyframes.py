"""Which frames of a 30 Hz stream become scene frames: the camera must have moved, and the image be sharp.

Motion is measured against the last *kept* frame, so a slow drift still yields a frame every
``min_translation`` metres or ``min_rotation`` degrees, while a robot standing still yields one.
Sharpness is the variance of the Laplacian; its scale depends on the scene and the camera, so a
frame is judged against the median of the recent candidate frames (``blur_ratio``) as well as an
optional absolute floor. Only frames that moved enough are decoded and scored, which also keeps
ingesting fast when most frames are near-duplicates.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field

import numpy as np

# Drop reasons, as the summary prints them.
NO_POSE = "no pose within tolerance"
NO_DEPTH = "no depth within tolerance"
DUPLICATE = "duplicate (moved too little)"
BLURRED = "blurred"


def motion(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """(metres, degrees) between two camera-to-world transforms."""
    translation = float(np.linalg.norm(a[:3, 3] - b[:3, 3]))
    relative = a[:3, :3].T @ b[:3, :3]
    cosine = np.clip((np.trace(relative) - 1.0) / 2.0, -1.0, 1.0)
    return translation, math.degrees(math.acos(cosine))


@dataclass
class KeyframeSelector:
    """Stateful: ``moved_enough`` then ``sharp_enough`` for each frame, ``keep`` for the kept ones."""

    min_translation: float
    min_rotation: float
    min_sharpness: float
    blur_ratio: float
    window: int
    last_kept: np.ndarray | None = None
    _recent: deque[float] = field(default_factory=deque, repr=False)

    def moved_enough(self, c2w: np.ndarray) -> bool:
        if self.last_kept is None:
            return True
        metres, degrees = motion(self.last_kept, c2w)
        return metres >= self.min_translation or degrees >= self.min_rotation

    def sharp_enough(self, score: float) -> bool:
        """Judge ``score`` against the floor and the recent median, then remember it for the next frames."""
        blurred = score < self.min_sharpness
        if self.blur_ratio > 0 and self._recent:
            blurred |= score < self.blur_ratio * float(np.median(self._recent))
        self._recent.append(score)
        while len(self._recent) > self.window:
            self._recent.popleft()
        return not blurred

    def keep(self, c2w: np.ndarray) -> None:
        self.last_kept = c2w
