"""On-the-fly training augmentation: an adapter over :mod:`napari_4dstem.simulation.augment`.

Each training sample gets the full crystal4D-style set of distortions of
:func:`~napari_4dstem.simulation.augment.augment`, drawn from one seed taken from the
training generator (so a training run is reproducible from its seed):

- the SAME geometric warp (sub-pixel shift up to ``max_shift_px``, elliptic distortion up to
  ``ellipticity``, rotation up to ``rotation_deg``) on the pattern, its probe and its label, so
  the label's peaks move exactly where the pattern's disks move; the training loop then
  re-centres the warped probe as inference does (:func:`~napari_4dstem.nn.infer.probe_geometry`),
  so the network sees an elliptic probe centred in its frame and a pattern shifted against it
  (as with descan);
- plasmon background, detector blur, dose and Poisson counting noise, read noise, hot/dead and
  salt-and-pepper pixels, optional beam stop: on the pattern only (probe and label stay clean).

The dose is counts per pixel where the (noise-free) pattern is 1: the central disk of the
proxy shards (:func:`~napari_4dstem.nn.synthetic.write_training_shards`), or, with
``scale_to_max``, the brightest pixel -- needed for the simulation engines' shards, whose
patterns are fractions of the incident beam (sum 1). A flat background (counts per pixel)
is added before the noise.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from ..simulation.augment import (
    Augmentation,
    AugmentConfig,
    AugmentedSample,
    augment,
    draw_augmentation,
)

__all__ = ["Augment"]


@dataclass(frozen=True)
class Augment:
    """Training augmentation parameters; call :meth:`apply` per sample.

    ``Augment(max_shift_px=0)`` keeps the geometry fixed (no shift, ellipse or rotation: the
    deterministic mode validation uses with a fixed generator); the noise still applies.
    """

    dose: tuple[float, float] = (20.0, 300.0)  # counts/px where the pattern is 1, log-uniform
    background: tuple[float, float] = (0.1, 1.0)  # flat counts per pixel
    max_shift_px: float = 4.0  # 0: no geometric warp at all
    ellipticity: float = 0.1  # largest axis ratio - 1
    rotation_deg: float = 2.0
    plasmon_weight: tuple[float, float] = (0.01, 0.1)
    plasmon_width_inv_A: tuple[float, float] = (0.01, 0.1)
    blur_sigma_px: tuple[float, float] = (0.0, 1.0)
    read_noise: tuple[float, float] = (0.0, 2.0)  # counts
    hot_dead_fraction: float = 1e-3
    salt_pepper_fraction: float = 1e-3
    beam_stop_probability: float = 0.0
    scale_to_max: bool = False  # dose per px of the brightest pixel (shards summing to 1)
    pixel_size_inv_A: float = 0.01  # when the sample does not say (sets the plasmon width in px)

    def __post_init__(self):
        self.config()  # the ranges are checked once, here

    @property
    def geometric(self) -> bool:
        return self.max_shift_px > 0

    def config(self) -> AugmentConfig:
        """The :class:`~napari_4dstem.simulation.augment.AugmentConfig` these ranges make."""
        g = self.geometric
        return AugmentConfig(
            dose_e=self.dose,
            plasmon_weight=self.plasmon_weight,
            plasmon_width_inv_A=self.plasmon_width_inv_A,
            shift_px=float(self.max_shift_px) if g else 0.0,
            ellipticity=self.ellipticity if g else 0.0,
            rotation_deg=self.rotation_deg if g else 0.0,
            blur_sigma_px=self.blur_sigma_px,
            read_noise=self.read_noise,
            hot_dead_fraction=self.hot_dead_fraction,
            salt_pepper_fraction=self.salt_pepper_fraction,
            beam_stop_probability=self.beam_stop_probability,
        )

    def without_geometry(self) -> Augment:
        """The same noise with the geometry fixed (for validation against unwarped truths)."""
        return dataclasses.replace(self, max_shift_px=0.0)

    def apply(
        self,
        pattern: np.ndarray,
        probe: np.ndarray | None,
        label: np.ndarray,
        rng: np.random.Generator,
        *,
        origin_px=None,
        pixel_size_inv_A: float | None = None,
        bragg_qy: np.ndarray | None = None,
        bragg_qx: np.ndarray | None = None,
        params: Augmentation | None = None,
    ) -> AugmentedSample:
        """Augment one training sample (noise-free ``pattern``, ``probe``, ``label``, all
        ``(H, W)``); the sample's seed is drawn from ``rng``.

        Returns the :class:`~napari_4dstem.simulation.augment.AugmentedSample`: counts, warped
        probe and label, warped Bragg positions (when given), the warp and the drawn
        parameters. ``origin_px`` is the centre of the elliptic distortion (the beam; default
        the pattern centre). Without a probe there is no plasmon background (its shape is the
        probe's), and the returned probe is the warped pattern. ``params`` replays (or plants)
        drawn parameters instead of drawing them.
        """
        seed = int(rng.integers(0, 2**63 - 1))
        p = np.asarray(pattern, np.float32)
        finite = bool(np.all(np.isfinite(p)))
        p = np.clip(p, 0, None) if finite else p
        if self.scale_to_max and finite:
            p = p / max(float(p.max()), 1e-30)
        params = draw_augmentation(self.config(), seed) if params is None else params
        if probe is None:
            params = dataclasses.replace(params, plasmon_weight=0.0)
            probe = p
        flat = float(rng.uniform(*self.background)) if self.background[1] > 0 else 0.0
        if flat:
            p = p + np.float32(flat / params.dose_e)
        px = self.pixel_size_inv_A if pixel_size_inv_A is None else float(pixel_size_inv_A)
        if not px > 0 or not np.isfinite(px):
            px = self.pixel_size_inv_A
        out = augment(
            p,
            probe,
            label,
            seed=seed,
            origin_px=None if origin_px is None else tuple(map(float, origin_px)),
            pixel_size_inv_A=px,
            bragg_qy=bragg_qy,
            bragg_qx=bragg_qx,
            augmentation=params,
        )
        if not finite:  # bad data: pass it on, the NaN-loss stop names it
            out = dataclasses.replace(out, pattern=np.full_like(out.pattern, np.nan))
        return out

    def __call__(self, pattern: np.ndarray, label: np.ndarray, rng: np.random.Generator):
        """``(pattern, label) -> (counts, warped label)``: the protocol of any training
        augmentation callable (no probe: no plasmon background)."""
        s = self.apply(pattern, None, label, rng)
        return s.pattern, s.label

    def sample(self, sample, rng: np.random.Generator) -> AugmentedSample:
        """:meth:`apply` on a shard's :class:`~napari_4dstem.simulation.shards.TrainingSample`
        (its beam origin and pixel size taken from its metadata when it has them)."""
        meta = sample.meta or {}
        origin = meta.get("origin_px")
        if origin is not None and not np.all(np.isfinite(origin)):
            origin = None
        return self.apply(
            sample.pattern,
            sample.probe,
            sample.label,
            rng,
            origin_px=origin,
            pixel_size_inv_A=meta.get("pixel_size_inv_A"),
        )
