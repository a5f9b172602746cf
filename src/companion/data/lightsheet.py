"""Offline stand-in for the VesSAP / VesSep2020 light-sheet mouse-brain vessel data (chapter 2, VpbSD).

A :class:`LightSheetVolume` is a dense capillary bed from the book's vessel generator
(:func:`companion.data.vessels.generate_tree` with :data:`CAPILLARY_BED`) seen through a simple light-sheet
appearance model, then preprocessed as the VpbSD paper describes.  Public entry points: :func:`generate_lightsheet`,
:func:`generate_lightsheet_set`, :func:`render` (the appearance model on any binary map) and :func:`preprocess`
(also for real data).

What the paper says (VpbSD, Sec. 4.1.1; facts about the real data)
    * VesSep2020 (VesSAP, Todorov et al., Nature Methods 2020): tissue-cleared mouse brains imaged by light-sheet
      microscopy, voxel size 1.625 x 1.625 x 3.0 um, 12 mice of four strains, two vessel stains (VpbSD used wheat
      germ agglutinin only).
    * Many unlabeled volumes (stitched with TeraStitcher and cut into equal patches) and 11 manually annotated
      samples of 500 x 500 x 50 voxels, used in 5-fold cross-validation.
    * Preprocessing: values above the 95th percentile are truncated to it, then the data are min-max scaled
      (:func:`preprocess`).

What is ours (choices of this stand-in, not taken from the paper)
    * Geometry: a cubic ``grid**3`` volume (the real patches are 500 x 500 x 50 voxels of anisotropic size); the
      vessels form a dense bed of thin, tortuous, looping vessels (:data:`CAPILLARY_BED`): eight inflow vessels of
      radius ``0.045 * grid`` entering through all six faces, Murray-law branching down to 0.75 voxel radius,
      up to 60 anastomoses (loops).  At ``grid=64`` about 5-6 % of the voxels are vessel, median radius about one
      voxel.  The label is exactly the generator's binary map.
    * Appearance (:class:`LightSheetParams`, every number below is a default of ours, chosen by eye to give
      images that look like light-sheet vessel scans, not fitted to VesSAP):

      - stained vessels emit intensity 1 with a smooth +-25 % brightness variation (uneven staining);
      - autofluorescent tissue background of mean 0.08 varying smoothly by +-50 % over ~0.15 grid, plus fine
        texture (+-20 %);
      - illumination: the light sheet enters along axis 0 (``x``); absorbers in its path cast *stripe shadows*:
        narrow dips (0.7-2.5 voxels wide in ``y``, extended in ``z``) that start at a random ``x`` and continue
        along the illumination axis, 20-60 % deep, about 6 per 64 voxels of ``y``;
      - depth attenuation along the detection axis 2 (``z``, depth into the sample):
        ``exp(-attenuation * z / (grid - 1))``, default ``attenuation = 0.8`` (45 % left at the deepest plane);
      - anisotropic Gaussian point-spread function, ``sigma_xy = 0.5`` voxels in ``x``/``y`` and
        ``z_blur_ratio = 3.5`` times that along ``z`` (light-sheet axial resolution is several times worse than
        lateral);
      - Poisson photon noise at ``photons = 300`` photons for unit intensity, plus Gaussian read noise of
        standard deviation ``read_noise = 0.02``.

      Order (:func:`render`): emission (vessels + background) x stripe transmission x depth attenuation, then
      the PSF, then Poisson and Gaussian noise; :func:`generate_lightsheet` then applies :func:`preprocess`.

Determinism: everything depends on the arguments only (no global random state).  :func:`generate_lightsheet`
uses ``seed`` for the tree and ``np.random.default_rng([seed, 1])`` for the appearance; the sets spawn one seed
per item from ``np.random.SeedSequence(seed)`` as :func:`~companion.data.vessels.generate_dataset` does.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy import ndimage as ndi

from .vessels import generate_tree

__all__ = ["CAPILLARY_BED", "LightSheetParams", "LightSheetSet", "LightSheetVolume", "generate_lightsheet",
           "generate_lightsheet_set", "preprocess", "render"]

#: The generator preset the stand-in's vessels use, as overrides of the ``"cerebral"`` preset of
#: :mod:`companion.data.vessels` (every :class:`~companion.data.vessels.TreePreset` field can be overridden, so no
#: new preset was needed there).  Eight thin roots enter through all six faces of the box, which is the organ domain
#: (a sphere reaching beyond the faces), branch by Murray's law down to 0.75 voxels with wide angles and strong
#: tortuosity, and up to 60 anastomoses join nearby terminal ends: a dense bed of small vessels with loops.
CAPILLARY_BED: dict[str, Any] = dict(
    roots=(((0.0, 0.3, 0.45), (1.0, 0.1, 0.0)), ((1.0, 0.7, 0.55), (-1.0, -0.1, 0.0)),
           ((0.35, 0.0, 0.6), (0.0, 1.0, 0.1)), ((0.65, 1.0, 0.4), (0.0, -1.0, -0.1)),
           ((0.5, 0.45, 0.0), (0.1, 0.0, 1.0)), ((0.45, 0.6, 1.0), (-0.1, 0.0, -1.0)),
           ((0.0, 0.75, 0.2), (1.0, -0.2, 0.2)), ((1.0, 0.25, 0.8), (-1.0, 0.2, -0.2))),
    root_radius_frac=0.045,
    root_length_frac=0.1,
    domain=(((0.5, 0.5, 0.5), (0.62, 0.62, 0.62)),),
    length_ratio=(4.0, 9.0),
    asymmetry=(0.6, 1.0),
    branch_angle_deg=(25.0, 80.0),
    plane_rotation_deg=(0.0, 360.0),
    tortuosity=0.1,
    tortuosity_modes=2,
    max_generation=10,
    first_split_angle_deg=None,
    first_split_asymmetry=None,
    min_radius_vox=0.75,
    min_length_vox=3.0,
    loops=True,
    ring=False,
    n_anastomoses=60,
    anastomosis_max_dist_frac=0.3,
    territory_bias=0.6,
    territory_reach=0.6,
    clearance_vox=1.0,
)
_TREE_KIND = "cerebral"


@dataclass(frozen=True)
class LightSheetParams:
    """Appearance of a light-sheet vessel scan.  All values are ours (see the module docstring); intensities are
    relative to a stained vessel (1.0) before noise; lengths are in voxels unless they end in ``_frac`` (fraction
    of the grid side).  Axis 0 (``x``) is the illumination axis, axis 2 (``z``) the detection / depth axis."""

    #: Gaussian PSF standard deviation in x and y (voxels)
    sigma_xy: float = 0.5
    #: PSF sigma along z divided by ``sigma_xy`` (3-5 for light-sheet microscopes)
    z_blur_ratio: float = 3.5
    #: depth attenuation along z: factor ``exp(-attenuation * z / (grid - 1))`` (0: off)
    attenuation: float = 0.8
    #: expected number of stripe shadows per 64 voxels of the y extent (0: off)
    stripes_per_64: float = 6.0
    #: depth range of one stripe shadow (fraction of the light removed)
    stripe_strength: tuple[float, float] = (0.2, 0.6)
    #: range of the stripe widths across the illumination direction (Gaussian sigma in y, voxels)
    stripe_width_vox: tuple[float, float] = (0.7, 2.5)
    #: range of the stripe extents in z (Gaussian sigma, fraction of the grid)
    stripe_extent_frac: tuple[float, float] = (0.1, 0.4)
    #: mean autofluorescent background (relative to the vessel signal)
    background: float = 0.08
    #: relative amplitude of the smooth background variation (standard deviation / mean)
    background_variation: float = 0.5
    #: correlation length of the smooth background (Gaussian sigma, fraction of the grid)
    background_scale_frac: float = 0.15
    #: relative standard deviation of the fine background texture (1-voxel correlation)
    texture: float = 0.2
    #: relative standard deviation of the smooth vessel brightness variation (uneven staining)
    vessel_brightness_variation: float = 0.25
    #: expected photons at unit intensity for Poisson noise (0 or None: no photon noise)
    photons: float | None = 300.0
    #: standard deviation of the additive Gaussian read noise (relative to unit intensity; 0: off)
    read_noise: float = 0.02

    def __post_init__(self) -> None:
        for nm in ("sigma_xy", "z_blur_ratio", "attenuation", "stripes_per_64", "background",
                   "background_variation", "texture", "vessel_brightness_variation", "read_noise"):
            v = getattr(self, nm)
            if not (isinstance(v, (int, float)) and np.isfinite(v) and v >= 0):
                raise ValueError(f"{nm} must be a finite non-negative number, got {v!r}")
        if not self.background_scale_frac > 0:
            raise ValueError(f"background_scale_frac must be positive, got {self.background_scale_frac!r}")
        if self.photons is not None and not (np.isfinite(self.photons) and self.photons >= 0):
            raise ValueError(f"photons must be None or a non-negative number, got {self.photons!r}")
        for nm in ("stripe_strength", "stripe_width_vox", "stripe_extent_frac"):
            lo, hi = getattr(self, nm)
            if not 0 <= lo <= hi:
                raise ValueError(f"{nm} must be a (low, high) range of non-negative numbers, got {(lo, hi)}")
        if self.stripe_strength[1] > 1:
            raise ValueError(f"stripe_strength must lie in [0, 1], got {self.stripe_strength}")


@dataclass
class LightSheetVolume:
    """One stand-in scan: ``image`` float32 in ``[0, 1]`` after :func:`preprocess`; ``label`` bool, the vessel
    map (``True`` = vessel); ``params`` the appearance; ``seed`` the tree seed (the appearance uses
    ``default_rng([seed, 1])``)."""

    image: np.ndarray
    label: np.ndarray
    params: LightSheetParams = field(repr=False)
    seed: int

    @property
    def grid(self) -> int:
        return int(self.label.shape[0])

    def __repr__(self) -> str:
        return (f"LightSheetVolume(grid={self.grid}, seed={self.seed}, "
                f"vessel fraction={float(self.label.mean()):.4f})")


@dataclass
class LightSheetSet:
    """A labeled and an unlabeled part (the unlabeled volumes carry their labels too, for diagnostics only)."""

    labeled: list[LightSheetVolume]
    unlabeled: list[LightSheetVolume]


def _params(overrides: dict[str, Any]) -> LightSheetParams:
    names = [f.name for f in dataclasses.fields(LightSheetParams)]
    bad = sorted(set(overrides) - set(names))
    if bad:
        raise TypeError(f"unknown LightSheetParams field(s) {', '.join(map(repr, bad))}; valid fields: "
                        f"{', '.join(names)}")
    return LightSheetParams(**overrides)


def preprocess(image: Any, percentile: float = 95.0) -> np.ndarray:
    """The VpbSD preprocessing: truncate values above the ``percentile``-th percentile (95 in the paper) to it,
    then min-max scale to ``[0, 1]``.  Returns float32; a constant image gives zeros.  Works on any array (real
    scans included); non-finite values raise ``ValueError``."""
    a = np.asarray(image, dtype=np.float32)
    if a.size == 0:
        raise ValueError("image must not be empty")
    if not np.all(np.isfinite(a)):
        raise ValueError("image contains non-finite values")
    hi = np.float32(np.percentile(a, percentile))
    a = np.minimum(a, hi)
    lo = np.float32(a.min())
    if hi <= lo:
        return np.zeros_like(a)
    return ((a - lo) / (hi - lo)).astype(np.float32)


def _smooth_field(rng: np.random.Generator, shape: tuple[int, ...], sigma: float) -> np.ndarray:
    """Zero-mean, unit-variance smooth Gaussian random field of ``shape`` (computed on a coarse grid and
    upsampled when ``sigma`` is large, for speed)."""
    f = max(1, int(sigma // 2))
    coarse = tuple(-(-n // f) + 2 for n in shape)
    z = ndi.gaussian_filter(rng.standard_normal(coarse).astype(np.float32), sigma / f, mode="wrap")
    if f > 1:
        z = ndi.zoom(z, f, order=1)
    z = z[tuple(slice(0, n) for n in shape)]
    sd = float(z.std())
    return (z - z.mean()) / (sd if sd > 0 else 1.0)


def _stripes(rng: np.random.Generator, shape: tuple[int, ...], p: LightSheetParams) -> np.ndarray:
    """Illumination transmission (<= 1) with stripe shadows cast along the illumination axis 0."""
    out = np.ones(shape, dtype=np.float32)
    n = rng.poisson(p.stripes_per_64 * shape[1] / 64.0) if p.stripes_per_64 > 0 else 0
    cx, cy, cz = (np.arange(k, dtype=np.float32) for k in shape)
    for _ in range(int(n)):
        y0, z0 = rng.uniform(0, shape[1] - 1), rng.uniform(0, shape[2] - 1)
        wy = rng.uniform(*p.stripe_width_vox)
        wz = rng.uniform(*p.stripe_extent_frac) * shape[2]
        depth = rng.uniform(*p.stripe_strength)
        x0 = rng.uniform(0, 0.5 * shape[0])  # the absorber; its shadow continues along +x
        gy = np.exp(-0.5 * ((cy - y0) / max(wy, 1e-3)) ** 2)
        gz = np.exp(-0.5 * ((cz - z0) / max(wz, 1e-3)) ** 2)
        onset = 1.0 / (1.0 + np.exp(-(cx - x0) / 1.5))
        out *= 1.0 - depth * onset[:, None, None] * (gy[:, None] * gz[None, :])[None, :, :]
    return out


def render(label: Any, seed: int | list[int] = 0, **appearance: Any) -> np.ndarray:
    """The raw light-sheet image (float32, not preprocessed, arbitrary units with a vessel at about 1) of a binary
    3D map ``label`` (cubic or not) under :class:`LightSheetParams` ``appearance`` overrides, with all randomness
    from ``np.random.default_rng(seed)``."""
    p = _params(appearance)
    lab = np.asarray(label).astype(bool)
    if lab.ndim != 3:
        raise ValueError(f"label must be a 3D array, got shape {lab.shape}")
    rng = np.random.default_rng(seed)
    shape = lab.shape
    G = max(shape)  # length scales given as grid fractions refer to the longest side

    vessel = lab.astype(np.float32)
    if p.vessel_brightness_variation > 0:
        vessel *= np.clip(1.0 + p.vessel_brightness_variation * _smooth_field(rng, shape, 0.08 * G), 0.2, None)
    bg = np.full(shape, p.background, dtype=np.float32)
    if p.background > 0 and p.background_variation > 0:
        bg *= np.clip(1.0 + p.background_variation * _smooth_field(rng, shape, p.background_scale_frac * G), 0.05,
                      None)
    if p.background > 0 and p.texture > 0:
        tex = ndi.gaussian_filter(rng.standard_normal(shape).astype(np.float32), 1.0)
        tex /= max(float(tex.std()), 1e-6)
        bg *= np.clip(1.0 + p.texture * tex, 0.0, None)
    emit = vessel + bg
    # illumination: stripe shadows cast along x
    if p.stripes_per_64 > 0:
        emit *= _stripes(rng, shape, p)
    if p.attenuation > 0:
        z = np.arange(shape[2], dtype=np.float32) / max(shape[2] - 1, 1)
        emit *= np.exp(-p.attenuation * z)[None, None, :]
    if p.sigma_xy > 0:
        s = p.sigma_xy
        emit = ndi.gaussian_filter(emit, (s, s, s * p.z_blur_ratio), mode="nearest")
    if p.photons:
        emit = rng.poisson(np.clip(emit, 0, None) * p.photons).astype(np.float32) / np.float32(p.photons)
    if p.read_noise > 0:
        emit = emit + rng.normal(0.0, p.read_noise, size=shape).astype(np.float32)
    return emit.astype(np.float32, copy=False)


def generate_lightsheet(grid: int = 64, seed: int = 0, *, vessels: dict[str, Any] | None = None,
                        **appearance: Any) -> LightSheetVolume:
    """One stand-in scan: the capillary bed ``generate_tree("cerebral", grid, seed, **CAPILLARY_BED)`` (with
    ``vessels`` overriding further preset fields), rendered by :func:`render` with ``appearance`` overrides of
    :class:`LightSheetParams` and seed ``[seed, 1]``, then :func:`preprocess`-ed."""
    params = _params(appearance)
    tree = generate_tree(_TREE_KIND, grid, int(seed), **{**CAPILLARY_BED, **(vessels or {})})
    raw = render(tree.volume, seed=[int(seed), 1], **dataclasses.asdict(params))
    return LightSheetVolume(image=preprocess(raw), label=tree.volume.copy(), params=params, seed=int(seed))


def generate_lightsheet_set(n_labeled: int = 11, n_unlabeled: int = 22, grid: int = 64, seed: int = 0, *,
                            vessels: dict[str, Any] | None = None, **appearance: Any) -> LightSheetSet:
    """``n_labeled`` (11, as VesSep2020's annotated samples) and ``n_unlabeled`` stand-in scans.

    Item ``i`` (labeled first, then unlabeled) uses the ``i``-th child of
    ``np.random.SeedSequence(seed).spawn(n_labeled + n_unlabeled)`` (its first 63-bit state word is the item's
    ``seed``), so the same call gives identical arrays.  ``vessels`` and ``appearance`` go to every
    :func:`generate_lightsheet` call.  A progress bar is shown for more than 8 items."""
    for nm, v in (("n_labeled", n_labeled), ("n_unlabeled", n_unlabeled)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 0:
            raise ValueError(f"{nm} must be a non-negative integer, got {v!r}")
    _params(appearance)  # fail fast on bad arguments
    n = int(n_labeled) + int(n_unlabeled)
    children = np.random.SeedSequence(int(seed)).spawn(n)
    seeds = [int(ch.generate_state(1, dtype=np.uint64)[0] >> np.uint64(1)) for ch in children]
    it: Any = range(n)
    if n > 8:
        from ..progress import progress

        it = progress(it, total=n, desc="light-sheet volumes", leave=False)
    vols = [generate_lightsheet(grid, seeds[i], vessels=vessels, **appearance) for i in it]
    return LightSheetSet(labeled=vols[: int(n_labeled)], unlabeled=vols[int(n_labeled):])
