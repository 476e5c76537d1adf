"""Minimal on-the-fly augmentation for training (until ``simulation/augment*.py`` exists).

Applied to a noise-free shard pattern with the central disk about 1 (the proxy shards; with
``scale_to_max`` any normalisation, e.g. the simulation engines' patterns that sum to 1): a random
integer shift of pattern and label together (the probe stays centred: the network must find
disks anywhere), a random dose (counts per pixel of the central disk, log-uniform) with a
flat background, then Poisson noise. Only dose, noise and shift: no elliptic distortion,
plasmon background, hot/dead pixels or blur yet -- the crystal4D-style set is being written
in ``simulation/`` and should replace this.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["Augment"]


@dataclass(frozen=True)
class Augment:
    dose: tuple[float, float] = (20.0, 300.0)
    background: tuple[float, float] = (0.1, 1.0)
    max_shift_px: int = 4
    scale_to_max: bool = False  # dose per px of the brightest pixel (shards normalised otherwise)

    def __call__(self, pattern: np.ndarray, label: np.ndarray, rng: np.random.Generator):
        if self.max_shift_px:
            sy, sx = rng.integers(-self.max_shift_px, self.max_shift_px + 1, 2)
            pattern = _shift(pattern, sy, sx)
            label = _shift(label, sy, sx)
        if not np.all(np.isfinite(pattern)):  # bad data: pass it on, the NaN-loss stop names it
            return pattern.astype(np.float32), label
        lo, hi = np.log(self.dose[0]), np.log(self.dose[1])
        d = float(np.exp(rng.uniform(lo, hi)))
        bg = float(rng.uniform(*self.background))
        p = np.clip(pattern, 0, None)
        if self.scale_to_max:
            p = p / max(float(p.max()), 1e-30)
        lam = p * d + bg
        return rng.poisson(lam).astype(np.float32), label


def _shift(a: np.ndarray, sy: int, sx: int) -> np.ndarray:
    """Shift with zero fill (no wrap-around: disks do not reappear at the far edge)."""
    out = np.zeros_like(a)
    h, w = a.shape
    ys, yd = (slice(0, h - sy), slice(sy, h)) if sy >= 0 else (slice(-sy, h), slice(0, h + sy))
    xs, xd = (slice(0, w - sx), slice(sx, w)) if sx >= 0 else (slice(-sx, w), slice(0, w + sx))
    out[yd, xd] = a[ys, xs]
    return out
