"""Data for chapter 4 (SparseVM): an atlas with lateral-ventricle labels, an offline stand-in for the paper's sparse
clinical subjects, the real neurite-OASIS path, and dipy's real thick-slice scan.

Paper facts (Lewis et al. 2020, Sections 2.2, 3, 3.1, 3.3, 4.2)
--------------------------------------------------------------
* Atlas-based registration: a full-resolution, isotropic atlas (built with an external dataset) is registered to
  every subject; its mask is 1 everywhere.
* Subjects: T2-FLAIR scans of stroke patients, in-plane 0.85 mm, 5-7 mm between slices, so about 15 % of the
  slices of an isotropic research scan. Each scan is upsampled to the atlas resolution by *linear interpolation
  between the acquired slices*; the mask is 1 on acquired and 0 on interpolated voxels, and it becomes continuous
  in [0, 1] once resampled (affine alignment). Scans are affinely aligned to the atlas, skull-stripped and padded to
  160 x 192 x 160.
* Evaluation: Dice of the left and right lateral ventricles (manual labels), computed in subject space *in the
  acquired slices only*.
* The cohort has enlarged ventricles in some subjects (Fig. 4) and white-matter hyperintensities (WMH), high in some
  subjects (Fig. 5), which make intensities heterogeneous. The stroke data (Rost et al. 2010) are not public.

Our choices
-----------
Atlas (:func:`load_atlas`), the offline stand-in for the paper's atlas
  - nilearn's MNI152 2009 T1 template at 1 mm (197 x 233 x 189, RAS) with its grey- and white-matter probability
    maps, transposed to (z, y, x): axis 0 axial (inferior -> superior), 1 antero-posterior (posterior -> anterior),
    2 left-right (left -> right). Brain mask: ``gm + wm > 0.2``, closed (2 iterations) and hole-filled. Intensity:
    divided by the 99.5th percentile inside the brain, clipped to [0, 1], 0 outside the brain.
  - Lateral ventricles: CSF-like voxels (in the brain, ``gm < 0.3``, ``wm < 0.3``, intensity < 0.55) more than
    12 mm from the brain surface; 6-connected components of at least 1000 voxels whose centroid is 3-30 mm from the
    mid-sagittal plane (x = 0 mm, template index 98) and within 40 mm of the brain centre in the axial/AP plane.
    This keeps the two lateral ventricles (7.3 ml each in the template; the temporal horns are too thin in the
    template to be captured) and drops the midline third ventricle and cisterns and the Sylvian CSF. Voxels left of
    the mid-sagittal plane are label 1, right of it label 2.
  - Working grid: ``spacing_mm`` isotropic, a box of ``shape`` voxels centred on the brain's bounding-box centre
    (first voxel centre rounded to a whole mm, so integer spacings sample template voxel centres), zero outside the
    template. Image and brain mask: Gaussian pre-smoothing with sigma ``0.4 * spacing_mm`` mm (none at 1 mm), then
    trilinear sampling at the voxel centres; mask = sampled mask > 0.5. Labels: nearest neighbour at the voxel
    centres (no one-hot averaging), for the atlas and the subjects alike.

Subjects (:func:`make_subject`), the offline stand-in for the stroke cohort
  - Everything is sampled from the same 1 mm template arrays, on an intermediate grid with 1 mm along axis 0 and
    ``spacing_mm`` in-plane covering the working box (``ceil(D * spacing_mm)`` 1 mm slices), so the sparse
    acquisition happens at 1 mm along the slice axis without a full 1 mm 3-D volume (except at 1 mm spacing).
    Pre-smoothing: sigma ``0.4 * spacing_mm`` in-plane only.
  - Random streams: ``SeedSequence([seed, index])`` spawns three generators: geometry (deformation), appearance
    (intensities, lesions, noise) and acquisition (slice spacing, offset). Subject ``i`` of :func:`subject_set` is
    ``make_subject(..., seed, i)``. The geometry does not depend on ``shape`` or ``spacing_mm``.
  - Deformation (subject point -> atlas point), ``phi(x) = V(x + u(x))``:
    ``u`` is a cubic B-spline displacement on a control grid of spacing ``h = max(10, warp_mm / 0.35)`` mm over
    the template, coefficients = Gaussian-smoothed (sigma 1 control point) white noise rescaled so the largest
    control-point displacement is ``warp_mm`` (so ``|u| <= warp_mm``). Control displacements below ``0.40 h`` keep
    a 3-D cubic B-spline map injective (Choi & Lee 2000); we stay below ``0.35 h``.
    ``V`` enlarges the ventricles by a linear factor ``alpha`` (uniform in ``ventricle_scale``, allowed
    [0.9, 2]) by a radial scaling about their centroid ``c``: ``V(y) = c + (y - c) (1 - (1 - 1/alpha) b(y))``.
    The weight ``b`` uses the ventricles' star-shaped hull about ``c``: a radius ``rho(direction)``, the largest
    ventricle radius per 5-degree direction bin, widened by +-2 bins, smoothed by 7.5 degrees, floor 5 mm, one value
    per pole (it holds 99.7 % of the ventricle voxels). ``b = 1`` up to ``alpha * rho`` (so, warp aside, the
    ventricles scale by ``alpha`` and their volume by ``alpha ** 3``), then a cosine fall-off to 0 over 30 mm.
    ``b`` never increases along a ray from ``c``, and ``det DV = g^2 (g + r dg/dr)`` with
    ``g = 1 - (1 - 1/alpha) b`` is then positive (at least ``g^2 / alpha`` for ``alpha >= 1``); each ray maps
    monotonically onto itself, so ``V`` is a bijection.
    The labels follow the same map (nearest neighbour in the 1 mm labels), so they stay aligned with the image.
    The Jacobian determinant of ``phi`` is checked positive in the tests.
  - Appearance: ``kappa * A(phi(x)) ** gamma`` with ``A`` the atlas T1, ``gamma`` uniform in [0.7, 1.4] and
    ``kappa`` uniform in [0.8, 0.9] (a monotone remap: MSE to the atlas is never perfect, local correlation nearly
    is; the headroom lets lesions be brighter than white matter). White-matter hyperintensities: a smooth random
    field (cubic B-spline, 6 mm control spacing) plus a periventricular preference (within ~15 mm of the hull); the
    voxels of largest value among white matter (``wm > 0.6``, more than 4 mm from the mid-sagittal plane, sparing
    the corpus callosum) are lesions, as many as ``lesion_load`` (uniform in the requested range) times the brain
    voxels of the box, brightened by a factor ``1 + beta (0.6 + 0.4 t)`` with ``beta`` uniform in [0.15, 0.3] and
    ``t`` in [0, 1] rising towards a lesion's core. The realised ``lesion voxels / brain voxels``
    is recorded. Then a multiplicative bias field ``exp(bias * n)``, ``n`` a cubic B-spline field (40 mm control
    spacing, ``|n| <= 1``), Gaussian noise of sd ``noise`` per 1 mm slice voxel, clipping to [0, 1], 0 outside the
    brain.
  - Sparse acquisition: slice spacing uniform in ``slice_mm``, :func:`companion.sparsevm.acquisition.simulate_sparse`
    along axis 0 at 1 mm (every ``k = round(slice_mm)``-th 1 mm slice, random offset). Then axis 0 is brought from
    1 mm to ``spacing_mm`` by averaging the 1 mm slices that a working slice covers, weighted by their overlap
    (plain block means for integer spacings; exact box averages otherwise) -- for the linear image, the
    nearest-neighbour image, the confidence mask (continuous after averaging) and the dense image.
    ``acquired[j]``: working slice ``j`` overlaps at least one acquired 1 mm slice.
  - Subject labels: nearest neighbour of the 1 mm atlas labels at ``phi(working voxel centre)`` (dense, every slice).

Real data (:func:`load_dataset`, ``neurite_oasis``)
  - Files ``OASIS_OAS1_<nnnn>_MR1/aligned_norm.nii.gz`` and ``aligned_seg35.nii.gz`` found through the manifest's
    loader (:func:`companion.data.loaders.iter_samples`). The first case (sorted) is the atlas, the next ``limit``
    cases are subjects: real anatomy, so no synthetic warp, lesions, intensity remap or noise; only the same
    simulated sparse acquisition and resampling as above.
  - Orientation: arrays are reoriented to (S, A, R) with the NIfTI affine. If the header has no orientation (sform
    and qform codes 0) we assume FreeSurfer's conformed LIA layout: the collection is cropped from FreeSurfer's
    256^3 talairach space and its 2-D images are "coronal slice 109" of the 224 axis (adalca/medical-datasets,
    neurite-oasis.md), i.e. axis 0 left-right, 1 inferior-superior, 2 antero-posterior (unverified on the files).
  - Ventricle label numbers are read from the release's ``seg35_labels.txt`` colour table (names
    ``Left-Lateral-Ventricle`` / ``Right-Lateral-Ventricle``); without it FreeSurfer's numbers 4 and 43 are used.
  - Intensity: divided by the 99.5th percentile of the brain (label > 0), clipped to [0, 1], 0 outside the brain.
    ``lesion_load`` is 0.0 (no lesions are added; the release has no WMH labels).

dipy's thick-slice scan (:func:`aniso_example`)
  - ``aniso_vox.nii.gz``, 58 x 58 x 24 at 4 x 4 x 5 mm; axis 2 of the file (5 mm) becomes axis 0; axes flipped to
    (S, A, R) by the header's closest orientation (the slices are oblique); scaled by the 99.5th percentile.
"""
from __future__ import annotations

import functools
import math
import re
from dataclasses import dataclass, replace
from numbers import Integral, Real
from pathlib import Path

import numpy as np
from scipy import ndimage as ndi
from scipy import sparse

from .acquisition import simulate_sparse

__all__ = ["ATLAS_SOURCE", "Atlas", "Subject", "aniso_example", "load_atlas", "load_dataset", "make_subject",
           "subject_set"]

ATLAS_SOURCE = ("MNI152 2009 T1 template, 1 mm (nilearn), with lateral-ventricle labels derived from its grey/white-"
                "matter maps (offline stand-in for the paper's atlas)")

DATASETS = ("neurite_oasis",)

# template-derived constants (see the module docstring)
_BRAIN_THRESHOLD = 0.2
_CSF_TISSUE_MAX = 0.3  # gm and wm probability below this
_CSF_INTENSITY_MAX = 0.55
_DEEP_MM = 12.0  # ventricle candidates lie deeper than this below the brain surface
_MIN_COMPONENT = 1000  # voxels (ml / 1000)
_SIDE_MM = (3.0, 30.0)  # centroid distance from the mid-sagittal plane
_CENTRE_MM = 40.0  # centroid distance from the brain centre in the (z, y) plane

_TEMPLATE_SHAPE = (189, 233, 197)  # the 1 mm template in (S, A, R) order (the random fields cover it)
_SMOOTH = 0.4  # Gaussian pre-smoothing, sigma in units of the working spacing
_WARP_CONTROL_MM = 10.0
_INJECTIVE = 0.35  # largest control displacement / control spacing (0.40 is the 3-D bound)
_FADE_MM = 30.0  # the ventricle enlargement fades out over this distance
_HULL_STEP_DEG = 5.0  # angular resolution of the ventricles' radius table
_HULL_SMOOTH_DEG = 7.5
_HULL_MIN_MM = 5.0
_GAMMA = (0.7, 1.4)
_KAPPA = (0.8, 0.9)
_LESION_CONTROL_MM = 6.0
_LESION_WM = 0.6
_LESION_MIDLINE_MM = 4.0  # the corpus callosum is spared
_LESION_BOOST = (0.15, 0.3)
_BIAS_CONTROL_MM = 40.0


@dataclass(frozen=True)
class Atlas:
    """The atlas on the working grid: axis 0 axial (inferior -> superior), 1 AP, 2 LR (left -> right)."""

    image: np.ndarray  # (D, H, W) float32 in [0, 1]
    labels: np.ndarray  # (D, H, W) uint8: 0 background, 1 left lateral ventricle, 2 right lateral ventricle
    brain: np.ndarray  # (D, H, W) bool
    spacing_mm: float
    source: str


@dataclass(frozen=True)
class Subject:
    """A sparse clinical-like subject on the working grid (same axes as :class:`Atlas`)."""

    name: str
    image: np.ndarray  # (D, H, W) float32: sparse scan, linearly interpolated between acquired slices (model input)
    mask: np.ndarray  # (D, H, W) float32 confidence in [0, 1]
    labels: np.ndarray  # (D, H, W) uint8 ventricle labels (0/1/2), dense
    acquired: np.ndarray  # (D,) bool: working slices overlapping an acquired 1 mm slice (Dice is evaluated there)
    dense: np.ndarray  # (D, H, W) float32: the subject before sparse acquisition (figures only)
    nearest: np.ndarray  # (D, H, W) float32: nearest-neighbour interpolation of the sparse scan
    slice_mm: float
    lesion_load: float  # lesion voxels / brain voxels


# ----------------------------------------------------------------------------------------------- validation
def _check_shape(shape) -> tuple[int, int, int]:
    ok = (isinstance(shape, (tuple, list)) and len(shape) == 3
          and all(isinstance(n, Integral) and not isinstance(n, bool) and n > 0 for n in shape))
    if not ok:
        raise ValueError(f"shape must be three positive integers (D, H, W), got {shape!r}")
    return tuple(int(n) for n in shape)


def _check_number(name: str, value, lo: float, hi: float = math.inf, what: str = "") -> float:
    if isinstance(value, bool) or not isinstance(value, Real) or not math.isfinite(value) or not lo <= value <= hi:
        bound = f">= {lo}" if hi == math.inf else f"in [{lo}, {hi}]"
        raise ValueError(f"{name} must be a number {bound}{what}, got {value!r}")
    return float(value)


def _check_range(name: str, value, lo: float, hi: float, what: str = "") -> tuple[float, float]:
    """A (low, high) pair inside [lo, hi], or one number (a fixed value)."""
    pair = (value, value) if isinstance(value, Real) and not isinstance(value, bool) else value
    if not isinstance(pair, (tuple, list)) or len(pair) != 2:
        raise ValueError(f"{name} must be a number or a (low, high) pair, got {value!r}")
    a = _check_number(f"{name}[0]", pair[0], lo, hi, what)
    b = _check_number(f"{name}[1]", pair[1], lo, hi, what)
    if a > b:
        raise ValueError(f"{name} must be (low, high) with low <= high, got {value!r}")
    return a, b


def _check_seed(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, Integral) or value < 0:
        raise ValueError(f"{name} must be a non-negative integer, got {value!r}")
    return int(value)


def _check_grid(spacing_mm, shape) -> tuple[float, tuple[int, int, int]]:
    spacing = _check_number("spacing_mm", spacing_mm, 1.0, what=" (the template has 1 mm voxels)")
    return spacing, _check_shape(shape)


def _check_slices(slice_mm, spacing: float, shape: tuple[int, int, int]) -> tuple[float, float]:
    lo, hi = _check_range("slice_mm", slice_mm, max(1.0, spacing), math.inf,
                          f" (slices are acquired at 1 mm and must not be closer than spacing_mm={spacing:g})")
    depth = shape[0] * spacing
    if round(hi) > math.ceil(depth - 1e-9):
        raise ValueError(f"the box is {depth:g} mm deep along axis 0 (shape[0] * spacing_mm), less than the largest "
                         f"slice spacing {hi:g} mm: not even one gap fits; enlarge shape[0] or reduce slice_mm")
    return lo, hi


# ----------------------------------------------------------------------------------------------- the 1 mm template
@dataclass(frozen=True)
class _Volume:
    """A brain volume at ``zooms`` mm per voxel, axes (S, A, R), with its ventricle labels."""

    image: np.ndarray  # float32 in [0, 1], 0 outside the brain
    brain: np.ndarray  # bool
    labels: np.ndarray  # uint8 0/1/2
    zooms: tuple[float, float, float]
    centre_mm: np.ndarray  # (3,) brain bounding-box centre, mm from voxel 0
    source: str
    wm: np.ndarray | None = None  # white-matter probability (template only)
    midline: float | None = None  # axis-2 coordinate (mm) of the mid-sagittal plane (template only)
    cached: bool = False  # the template: its smoothed arrays are cached


def _bbox_centre(mask: np.ndarray, zooms) -> np.ndarray:
    lo_hi = [np.flatnonzero(mask.any(axis=tuple(j for j in range(3) if j != i)))[[0, -1]] for i in range(3)]
    return np.array([(a + b) / 2 * z for (a, b), z in zip(lo_hi, zooms)])


def _normalise(image: np.ndarray, brain: np.ndarray) -> np.ndarray:
    hi = float(np.percentile(image[brain], 99.5)) if brain.any() else 0.0
    out = np.clip(image / hi, 0.0, 1.0) if hi > 0 else np.zeros_like(image)
    return (out * brain).astype(np.float32)


def _ventricles(image, gm, wm, brain, midline: float) -> np.ndarray:
    """Lateral-ventricle labels (1 left, 2 right) of the 1 mm template, from its tissue maps (docstring)."""
    import cc3d

    # depth below the brain surface, on a 2 mm copy (10x faster than at 1 mm, within ~2 mm)
    coarse = ndi.distance_transform_edt(brain[::2, ::2, ::2], sampling=2.0) > _DEEP_MM
    deep = coarse.repeat(2, 0).repeat(2, 1).repeat(2, 2)[: brain.shape[0], : brain.shape[1], : brain.shape[2]]
    csf = deep & (gm < _CSF_TISSUE_MAX) & (wm < _CSF_TISSUE_MAX) & (image < _CSF_INTENSITY_MAX)
    components = cc3d.connected_components(csf, connectivity=6)
    stats = cc3d.statistics(components)
    centre = _bbox_centre(brain, (1.0, 1.0, 1.0))
    keep = []
    for i in range(1, len(stats["voxel_counts"])):
        z, y, x = stats["centroids"][i]
        side = abs(x - midline)
        if (stats["voxel_counts"][i] >= _MIN_COMPONENT and _SIDE_MM[0] <= side <= _SIDE_MM[1]
                and math.hypot(z - centre[0], y - centre[1]) <= _CENTRE_MM):
            keep.append(i)
    ventricles = np.isin(components, keep)
    labels = np.zeros(image.shape, np.uint8)
    left = np.arange(image.shape[2]) < midline  # axis 2 runs left -> right
    labels[ventricles & left[None, None, :]] = 1
    labels[ventricles & ~left[None, None, :]] = 2
    return labels


@functools.lru_cache(maxsize=1)
def _template() -> _Volume:
    """The 1 mm MNI152 template as (S, A, R) arrays with brain mask and ventricle labels (cached)."""
    import nibabel as nib
    from nilearn import datasets

    def read(loader):
        img = loader(resolution=1)
        if nib.aff2axcodes(img.affine) != ("R", "A", "S"):
            raise RuntimeError(f"nilearn's {loader.__name__} is not RAS ({nib.aff2axcodes(img.affine)})")
        return np.ascontiguousarray(img.get_fdata(dtype=np.float32).transpose(2, 1, 0)), img.affine

    t1, affine = read(datasets.load_mni152_template)
    gm, _ = read(datasets.load_mni152_gm_template)
    wm, _ = read(datasets.load_mni152_wm_template)
    tissue = gm + wm > _BRAIN_THRESHOLD
    box = tuple(slice(max(a - 4, 0), b + 5) for a, b in
                (np.flatnonzero(tissue.any(axis=tuple(j for j in range(3) if j != i)))[[0, -1]] for i in range(3)))
    brain = np.zeros_like(tissue)
    brain[box] = ndi.binary_fill_holes(ndi.binary_closing(tissue[box], iterations=2))
    image = _normalise(t1, brain)
    midline = -affine[0, 3] / affine[0, 0]  # x index of x = 0 mm
    labels = _ventricles(image, gm, wm, brain, midline)
    return _Volume(image=image, brain=brain, labels=labels, zooms=(1.0, 1.0, 1.0),
                   centre_mm=_bbox_centre(brain, (1, 1, 1)), source=ATLAS_SOURCE, wm=wm, midline=float(midline),
                   cached=True)


@functools.lru_cache(maxsize=6)
def _template_smoothed(name: str, sigma: tuple[float, float, float]) -> np.ndarray:
    """A template array (``image`` or ``brain``) Gaussian-smoothed with `sigma` (mm = voxels), cached."""
    arr = getattr(_template(), name).astype(np.float32)
    return ndi.gaussian_filter(arr, sigma, mode="constant") if any(sigma) else arr


def _smoothed(vol: _Volume, name: str, sigma_mm) -> np.ndarray:
    sigma = tuple(float(s) for s in sigma_mm)
    if vol.cached:
        return _template_smoothed(name, sigma)
    arr = getattr(vol, name).astype(np.float32)
    sig_vox = tuple(s / z for s, z in zip(sigma, vol.zooms))
    return ndi.gaussian_filter(arr, sig_vox, mode="constant") if any(sigma) else arr


# ----------------------------------------------------------------------------------------------- grids and sampling
def _axes(centre_mm: np.ndarray, shape, spacing: float) -> list[np.ndarray]:
    """Voxel-centre coordinates (mm from source voxel 0) of the working box, per axis."""
    return [np.round(c - (n - 1) / 2 * spacing) + spacing * np.arange(n) for c, n in zip(centre_mm, shape)]


def _sample_grid(arr: np.ndarray, zooms, axes, order: int) -> np.ndarray:
    """`arr` sampled on the tensor grid `axes` (mm), trilinear (order 1) or nearest (order 0), 0 outside."""
    start = np.array([a[0] for a in axes]) / np.asarray(zooms)
    step = np.array([(a[1] - a[0]) if len(a) > 1 else 1.0 for a in axes]) / np.asarray(zooms)
    return ndi.affine_transform(arr, np.diag(step), offset=start, output_shape=tuple(len(a) for a in axes),
                                order=order, mode="constant", cval=0.0, prefilter=False)


def _sample_points(arr: np.ndarray, zooms, coords_mm: np.ndarray, order: int) -> np.ndarray:
    """`arr` sampled at the points `coords_mm` (3, ...) in mm, 0 outside."""
    scale = np.reshape(np.asarray(zooms, np.float32), (3,) + (1,) * (coords_mm.ndim - 1))
    coords = coords_mm if np.all(scale == 1) else coords_mm / scale
    return ndi.map_coordinates(arr, coords, order=order, mode="constant", cval=0.0, prefilter=False)


def _on_grid(vol: _Volume, spacing: float, shape) -> Atlas:
    axes = _axes(vol.centre_mm, shape, spacing)
    sigma = (_SMOOTH * spacing,) * 3 if spacing > 1 else (0.0,) * 3
    image = np.clip(_sample_grid(_smoothed(vol, "image", sigma), vol.zooms, axes, 1), 0, 1).astype(np.float32)
    brain = _sample_grid(_smoothed(vol, "brain", sigma), vol.zooms, axes, 1) > 0.5
    labels = _sample_grid(vol.labels, vol.zooms, axes, 0).astype(np.uint8)
    return Atlas(image=image, labels=labels, brain=brain, spacing_mm=float(spacing), source=vol.source)


def _intermediate(vol: _Volume, spacing: float, shape):
    """Axes of the intermediate grid (1 mm along axis 0, `spacing` in-plane) and the (D, N) averaging matrix that
    brings its N 1 mm slices to the D working slices (row j: overlap of each 1 mm slice with working slice j)."""
    axes = _axes(vol.centre_mm, shape, spacing)
    depth = shape[0]
    edge = axes[0][0] - spacing / 2  # lower face of the first working slice
    n = math.ceil(depth * spacing - 1e-9)
    z1 = edge + 0.5 + np.arange(n)
    lo = np.maximum(edge + spacing * np.arange(depth)[:, None], (z1 - 0.5)[None, :])
    hi = np.minimum(edge + spacing * (np.arange(depth)[:, None] + 1), (z1 + 0.5)[None, :])
    weights = np.clip(hi - lo, 0.0, None) / spacing
    weights[weights < 1e-9] = 0.0
    return [z1, axes[1], axes[2]], sparse.csr_matrix(weights.astype(np.float32)), axes


def _downsample(matrix: sparse.csr_matrix, volume: np.ndarray) -> np.ndarray:
    if matrix.shape[0] == matrix.shape[1]:  # 1 mm working spacing: the identity
        return np.ascontiguousarray(volume, dtype=np.float32)
    flat = matrix @ volume.reshape(volume.shape[0], -1)
    return np.asarray(flat, dtype=np.float32).reshape((matrix.shape[0],) + volume.shape[1:])


def _acquire(name: str, dense1: np.ndarray, matrix, labels: np.ndarray, slice_mm: float, seed: int,
             lesion_load: float) -> Subject:
    """Sparse acquisition along axis 0 of the 1 mm-axial `dense1`, then averaging to the working slices."""
    scan = simulate_sparse(dense1, spacing_mm=1.0, slice_mm=slice_mm, seed=seed)
    acquired = np.asarray((matrix[:, scan.acquired] > 0).sum(axis=1)).ravel() > 0
    return Subject(name=name, image=_downsample(matrix, scan.image),
                   mask=np.clip(_downsample(matrix, scan.mask), 0.0, 1.0), labels=labels, acquired=acquired,
                   dense=_downsample(matrix, dense1), nearest=_downsample(matrix, scan.nearest),
                   slice_mm=float(slice_mm), lesion_load=float(lesion_load))


# ----------------------------------------------------------------------------------------------- smooth random fields
def _bspline(t: np.ndarray) -> np.ndarray:
    """Cubic B-spline basis (support [-2, 2])."""
    a = np.abs(t)
    return np.where(a < 1, (4 - 6 * a**2 + 3 * a**3) / 6, np.where(a < 2, (2 - a) ** 3 / 6, 0.0))


@dataclass(frozen=True)
class _Field:
    """A cubic B-spline field over the template: control points every ``step`` mm from ``origin``."""

    coef: np.ndarray  # (C, K0, K1, K2)
    origin: np.ndarray  # (3,) mm
    step: float

    @classmethod
    def random(cls, rng: np.random.Generator, channels: int, step: float, smooth: float = 0.0) -> "_Field":
        extent = np.array(_TEMPLATE_SHAPE, float)
        counts = np.ceil(extent / step).astype(int) + 5
        coef = rng.standard_normal((channels, *counts))
        if smooth:
            coef = ndi.gaussian_filter(coef, (0, smooth, smooth, smooth), mode="constant")
        return cls(coef=coef, origin=np.full(3, -2.0 * step), step=float(step))

    def scaled(self, largest: float) -> "_Field":
        """The same field with its largest control-point vector norm set to `largest`."""
        norm = np.sqrt((self.coef**2).sum(axis=0)).max()
        return _Field(self.coef * (largest / norm if norm > 0 else 0.0), self.origin, self.step)

    def on_grid(self, axes) -> np.ndarray:
        """Values (C, n0, n1, n2) on the tensor grid `axes` (mm), by separable matrix products."""
        w = [_bspline((a[:, None] - self.origin[i]) / self.step - np.arange(self.coef.shape[1 + i])[None, :])
             .astype(np.float32) for i, a in enumerate(axes)]
        # plain einsum (no BLAS): these small products are slowed down by BLAS thread wake-ups on a busy machine
        out = np.einsum("cijk,nk->cijn", self.coef.astype(np.float32), w[2])
        out = np.einsum("cijn,mj->cimn", out, w[1])
        return np.einsum("cimn,li->clmn", out, w[0])



@dataclass(frozen=True)
class _Hull:
    """The ventricles as a star-shaped region about their centroid: radius ``rho(direction)`` (mm)."""

    centre: np.ndarray  # (3,) template mm
    table: np.ndarray  # (polar nodes 0..180 deg, azimuth nodes -180..180 deg, both ends included)

    @staticmethod
    def angles(d: np.ndarray, r: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Polar angle from the superior axis and azimuth in the axial plane (radians) of offsets `d` (3, ...)."""
        polar = np.arccos(np.clip(d[0] / np.maximum(r, 1e-6), -1.0, 1.0))
        return polar, np.arctan2(d[1], d[2])

    def polar(self, points: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Offsets from the centre, their length r and ``r - rho(direction)`` (mm beyond the hull)."""
        d = points - self.centre.reshape((3,) + (1,) * (points.ndim - 1)).astype(np.float32)
        r = np.sqrt(d[0] ** 2 + d[1] ** 2 + d[2] ** 2)
        polar, azimuth = self.angles(d, r)
        step = np.deg2rad(_HULL_STEP_DEG)
        rho = ndi.map_coordinates(self.table, np.stack([polar / step, (azimuth + np.pi) / step]), order=1,
                                  mode="nearest", prefilter=False)
        return d, r, r - rho


@functools.lru_cache(maxsize=1)
def _hull() -> _Hull:
    """Radius table of the template's lateral ventricles (max radius per direction, floored and smoothed)."""
    pts = np.argwhere(_template().labels > 0).astype(np.float64)
    centre = pts.mean(axis=0)
    d = (pts - centre).T
    r = np.sqrt((d**2).sum(axis=0))
    polar, azimuth = _Hull.angles(d, r)
    step = np.deg2rad(_HULL_STEP_DEG)
    n_polar, n_azimuth = int(round(180 / _HULL_STEP_DEG)) + 1, int(round(360 / _HULL_STEP_DEG))
    table = np.full((n_polar, n_azimuth), _HULL_MIN_MM)
    i = np.clip(np.round(polar / step).astype(int), 0, n_polar - 1)
    j = np.round((azimuth + np.pi) / step).astype(int) % n_azimuth
    np.maximum.at(table, (i, j), r + 1.0)  # + about a voxel's half-diagonal; then widened by +-2 bins
    sigma = _HULL_SMOOTH_DEG / _HULL_STEP_DEG
    table = ndi.gaussian_filter(ndi.maximum_filter(table, size=5, mode=("nearest", "wrap")), sigma,
                                mode=("nearest", "wrap"))
    table[[0, -1]] = table[[0, -1]].max(axis=1, keepdims=True)  # one radius per pole: continuous there
    return _Hull(centre=centre, table=np.concatenate([table, table[:, :1]], axis=1).astype(np.float32))


@dataclass(frozen=True)
class _Deformation:
    """Subject point -> atlas point, ``phi(x) = V(x + u(x))`` (module docstring), in template mm."""

    warp: _Field
    hull: _Hull
    alpha: float  # linear enlargement of the ventricles

    def bump(self, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Offsets from the centre and the weight b: 1 within ``alpha`` times the hull (where the ventricles land
        once enlarged), a cosine fall-off to 0 over `_FADE_MM` beyond; non-increasing along every ray."""
        d, r, beyond = self.hull.polar(points)
        rho = r - beyond
        t = np.clip((r - np.float32(self.alpha) * rho) / np.float32(_FADE_MM), 0.0, 1.0)
        return d, np.float32(0.5) * (1.0 + np.cos(np.float32(np.pi) * t))

    def on_grid(self, axes) -> np.ndarray:
        grid = np.stack(np.meshgrid(*[a.astype(np.float32) for a in axes], indexing="ij"))
        d, b = self.bump(grid + self.warp.on_grid(axes))
        gain = 1.0 - np.float32(1.0 - 1.0 / self.alpha) * b
        return self.hull.centre.reshape(3, 1, 1, 1).astype(np.float32) + d * gain


def _streams(seed: int, index: int) -> list[np.random.Generator]:
    return [np.random.default_rng(s) for s in np.random.SeedSequence([seed, index]).spawn(3)]


def _deformation(seed: int, index: int, warp_mm: float, ventricle_scale: tuple[float, float]) -> _Deformation:
    geometry = _streams(seed, index)[0]
    alpha = float(geometry.uniform(*ventricle_scale))
    step = max(_WARP_CONTROL_MM, warp_mm / _INJECTIVE)
    warp = _Field.random(geometry, 3, step, smooth=1.0).scaled(warp_mm)
    return _Deformation(warp=warp, hull=_hull(), alpha=alpha)


def _subject_map(atlas_spacing_mm: float, shape, seed: int, index: int, *, warp_mm: float = 4.0,
                 ventricle_scale=(1.0, 1.6)) -> np.ndarray:
    """The subject -> atlas map at the working voxel centres, (3, D, H, W) template mm (for tests and figures)."""
    spacing, shape = _check_grid(atlas_spacing_mm, shape)
    phi = _deformation(seed, index, warp_mm, _check_range("ventricle_scale", ventricle_scale, 0.9, 2.0))
    return phi.on_grid(_axes(_template().centre_mm, shape, spacing))


def _subject_args(spacing_mm, shape, seed, index, *, slice_mm=(5.0, 7.0), warp_mm=4.0, ventricle_scale=(1.0, 1.6),
                  lesion_load=(0.0, 0.04), bias=0.25, noise=0.03):
    """make_subject's arguments, checked (ValueError with the allowed range)."""
    spacing, shape = _check_grid(spacing_mm, shape)
    return (spacing, shape, _check_seed("seed", seed), _check_seed("index", index),
            _check_slices(slice_mm, spacing, shape),
            _check_number("warp_mm", warp_mm, 0.0, 20.0, " (largest displacement of the smooth warp)"),
            _check_range("ventricle_scale", ventricle_scale, 0.9, 2.0, " (linear factor of the ventricles)"),
            _check_range("lesion_load", lesion_load, 0.0, 0.1, " (a fraction of the brain; white matter is ~40 %)"),
            _check_number("bias", bias, 0.0, 1.0, " (log-amplitude of the bias field)"),
            _check_number("noise", noise, 0.0, 0.5, " (noise sd)"))


# ----------------------------------------------------------------------------------------------- public API
def load_atlas(spacing_mm: float, shape: tuple[int, int, int]) -> Atlas:
    """The MNI152 atlas (offline stand-in) on the working grid: ``spacing_mm`` isotropic, ``shape`` voxels."""
    spacing, shape = _check_grid(spacing_mm, shape)
    return _on_grid(_template(), spacing, shape)


def make_subject(atlas_spacing_mm: float, shape: tuple[int, int, int], seed: int, index: int, *,
                 slice_mm=(5.0, 7.0), warp_mm: float = 4.0, ventricle_scale=(1.0, 1.6), lesion_load=(0.0, 0.04),
                 bias: float = 0.25, noise: float = 0.03) -> Subject:
    """One synthetic sparse subject (offline stand-in for the stroke cohort), deterministic in (seed, index).

    Range arguments take a (low, high) pair (drawn uniformly) or one number (fixed).
    """
    spacing, shape, seed, index, slices, warp_mm, scale, load, bias, noise = _subject_args(
        atlas_spacing_mm, shape, seed, index, slice_mm=slice_mm, warp_mm=warp_mm, ventricle_scale=ventricle_scale,
        lesion_load=lesion_load, bias=bias, noise=noise)

    vol = _template()
    _, look, acq = _streams(seed, index)
    phi = _deformation(seed, index, warp_mm, scale)
    axes1, matrix, axes = _intermediate(vol, spacing, shape)
    sigma = (0.0, _SMOOTH * spacing, _SMOOTH * spacing) if spacing > 1 else (0.0, 0.0, 0.0)
    points = phi.on_grid(axes1)
    atlas_t1 = np.clip(_sample_points(_smoothed(vol, "image", sigma), vol.zooms, points, 1), 0, 1)
    brain = _sample_points(_smoothed(vol, "brain", sigma), vol.zooms, points, 1) > 0.5
    wm = _sample_points(vol.wm, vol.zooms, points, 1)

    gamma, kappa = look.uniform(*_GAMMA), look.uniform(*_KAPPA)
    image = kappa * atlas_t1**gamma
    # white-matter hyperintensities: the largest values of a smooth field with a periventricular preference
    target = look.uniform(*load)
    field = _Field.random(look, 1, _LESION_CONTROL_MM).on_grid(axes1)[0]
    field += 0.5 * np.clip(1.0 - phi.hull.polar(points)[2] / 15.0, 0.0, 1.0)  # within ~15 mm of the ventricles
    candidates = brain & (wm > _LESION_WM) & (np.abs(points[2] - vol.midline) > _LESION_MIDLINE_MM)
    n_lesion = min(int(round(target * brain.sum())), int(candidates.sum()))
    boost = look.uniform(*_LESION_BOOST)
    lesions = np.zeros_like(brain)
    if n_lesion > 0:
        values = field[candidates]
        threshold = np.partition(values, values.size - n_lesion)[values.size - n_lesion]
        lesions = candidates & (field >= threshold)
        core = np.clip((field - threshold) / 0.3, 0.0, 1.0)
        image = np.where(lesions, image * (1.0 + boost * (0.6 + 0.4 * core)), image)
    realised = float(lesions.sum() / max(brain.sum(), 1))
    image = image * np.exp(bias * _Field.random(look, 1, _BIAS_CONTROL_MM).scaled(1.0).on_grid(axes1)[0])
    image = image + noise * look.standard_normal(image.shape)
    dense1 = (np.clip(image, 0.0, 1.0) * brain).astype(np.float32)

    labels = _sample_points(vol.labels, vol.zooms, phi.on_grid(axes), 0).astype(np.uint8)
    slice_drawn = float(acq.uniform(*slices))
    return _acquire(f"subject-{index:03d}", dense1, matrix, labels, slice_drawn, int(acq.integers(2**31)),
                    realised)


def subject_set(n: int, *, spacing_mm: float, shape: tuple[int, int, int], seed: int, **kw) -> list[Subject]:
    """Subjects ``0 .. n-1``: ``make_subject(spacing_mm, shape, seed, i, **kw)`` (seeds derived from (seed, i))."""
    n = _check_seed("n", n)
    _subject_args(spacing_mm, shape, seed, 0, **kw)  # bad arguments fail before any subject is made
    return [make_subject(spacing_mm, shape, seed, i, **kw) for i in range(n)]


# ----------------------------------------------------------------------------------------------- real data
_FREESURFER_VENTRICLES = (4, 43)  # Left-, Right-Lateral-Ventricle in FreeSurfer's colour table


def _ventricle_ids(root: Path) -> tuple[int, int]:
    """Left/right lateral-ventricle label numbers from the release's ``seg35_labels.txt`` (else FreeSurfer's)."""
    table = root / "seg35_labels.txt"
    if not table.exists():
        return _FREESURFER_VENTRICLES
    ids = {}
    for line in table.read_text(errors="replace").splitlines():
        m = re.match(r"\s*(\d+)\s+(\S+)", line)
        if m:
            ids[m.group(2).lower()] = int(m.group(1))
    try:
        return ids["left-lateral-ventricle"], ids["right-lateral-ventricle"]
    except KeyError:
        raise ValueError(f"{table} names no Left-/Right-Lateral-Ventricle; cannot find the ventricle labels") from None


def _to_sar(array: np.ndarray, img) -> tuple[np.ndarray, tuple[float, float, float]]:
    """`array` reoriented to (S, A, R) axes and its spacing in that order (LIA assumed if the header has no
    orientation)."""
    import nibabel.orientations as no

    coded = img.header.get_sform(coded=True)[1] or img.header.get_qform(coded=True)[1]
    ornt = no.io_orientation(img.affine) if coded else no.axcodes2ornt(("L", "I", "A"))
    transform = no.ornt_transform(ornt, no.axcodes2ornt(("S", "A", "R")))
    zooms = [float(z) for z in img.header.get_zooms()[:3]]
    out = no.apply_orientation(np.asarray(array), transform)
    # transform[i] = (target axis of source axis i, flip)
    order = [0.0] * 3
    for src, (dst, _) in enumerate(transform):
        order[int(dst)] = zooms[src]
    return np.ascontiguousarray(out), tuple(order)


def _real_volume(sample, root: Path, ventricle_ids: tuple[int, int]) -> _Volume:
    import nibabel as nib

    header = nib.load(str(root / sample.path))
    image, zooms = _to_sar(np.asarray(sample.image, np.float32), header)
    seg, _ = _to_sar(np.asarray(sample.target), header)
    if image.shape != seg.shape:
        raise ValueError(f"{sample.path}: image {image.shape} and segmentation {seg.shape} differ in shape")
    labels = np.zeros(seg.shape, np.uint8)
    labels[seg == ventricle_ids[0]] = 1
    labels[seg == ventricle_ids[1]] = 2
    brain = ndi.binary_fill_holes(seg > 0)
    if not brain.any():
        raise ValueError(f"{sample.path}: empty segmentation (no brain)")
    return _Volume(image=_normalise(image, brain), brain=brain, labels=labels, zooms=zooms,
                   centre_mm=_bbox_centre(brain, zooms), source=f"neurite_oasis: {sample.case}")


def load_dataset(dataset_id: str, *, spacing_mm: float, shape: tuple[int, int, int], limit: int | None, seed: int,
                 check: bool = True, **kw) -> tuple[Atlas, list[Subject]]:
    """Atlas and sparse subjects from real data on disk (module docstring). ``kw``: ``slice_mm`` only.

    `check` verifies the download against the manifest first; missing data raise an error naming
    ``companion data fetch neurite_oasis``.
    """
    from companion.data.download import dataset_dir
    from companion.data.loaders import LayoutError, iter_samples

    if dataset_id not in DATASETS:
        raise ValueError(f"dataset {dataset_id!r} unknown for SparseVM; choose one of {', '.join(DATASETS)}")
    spacing, shape = _check_grid(spacing_mm, shape)
    if limit is not None:
        limit = _check_seed("limit", limit)
    seed = _check_seed("seed", seed)
    unknown = set(kw) - {"slice_mm"}
    if unknown:
        raise ValueError(f"load_dataset takes only slice_mm besides the grid (real anatomy gets no synthetic warp, "
                         f"lesions or noise); got {', '.join(sorted(unknown))}")
    slices = _check_slices(kw.get("slice_mm", (5.0, 7.0)), spacing, shape)

    root = dataset_dir(dataset_id)
    samples = iter_samples(dataset_id, limit=None if limit is None else limit + 1, check=check)
    try:
        first = next(samples)
    except (LayoutError, FileNotFoundError, StopIteration) as exc:
        hint = f"run `companion data fetch {dataset_id}`"
        raise LayoutError(f"{dataset_id} not found under {root}: {exc}\nTo download it, {hint}.") from exc
    ids = _ventricle_ids(root)
    reference = _real_volume(first, root, ids)
    atlas = _on_grid(reference, spacing, shape)
    subjects = []
    for i, s in enumerate(samples):
        vol = _real_volume(s, root, ids)
        # subjects share the atlas's (affinely aligned) space, hence its box
        vol = replace(vol, centre_mm=reference.centre_mm)
        axes1, matrix, axes = _intermediate(vol, spacing, shape)
        sigma = (0.0, _SMOOTH * spacing, _SMOOTH * spacing) if spacing > 1 else (0.0, 0.0, 0.0)
        dense1 = np.clip(_sample_grid(_smoothed(vol, "image", sigma), vol.zooms, axes1, 1), 0, 1).astype(np.float32)
        labels = _sample_grid(vol.labels, vol.zooms, axes, 0).astype(np.uint8)
        acq = _streams(seed, i)[2]
        subjects.append(_acquire(s.case, dense1, matrix, labels, float(acq.uniform(*slices)),
                                 int(acq.integers(2**31)), 0.0))
    return atlas, subjects


# ----------------------------------------------------------------------------------------------- dipy's real scan
def aniso_example() -> dict:
    """dipy's ``aniso_vox.nii.gz`` (4 x 4 x 5 mm): the 5 mm axis first, and its linear / nearest upsampling to 1 mm.

    Returns ``image`` (24, 58, 58) in [0, 1] with ``spacing`` (5, 4, 4) mm; ``linear`` and ``nearest`` (116, 58, 58)
    at ``upsampled_spacing`` (1, 4, 4) mm (the slice centres land on every 5th 1 mm row); ``source``.
    """
    import nibabel as nib

    from companion.data.packaged import locate

    path = locate("dipy_aniso_vox")
    img = nib.load(str(path))
    zooms = [float(z) for z in img.header.get_zooms()[:3]]
    thick = int(np.argmax(zooms))
    volume = np.asarray(img.get_fdata(dtype=np.float32))
    volume, spacing = _to_sar(volume, img)
    if spacing[0] != zooms[thick]:
        raise RuntimeError(f"{path.name}: the thick axis ({zooms}) did not become the axial axis ({spacing})")
    image = _normalise(volume, np.ones(volume.shape, bool))
    ratio = int(round(spacing[0]))
    z = np.arange((image.shape[0] - 1) * ratio + 1) / ratio  # 1 mm rows in units of slices
    lo = np.minimum(np.floor(z).astype(int), image.shape[0] - 2)
    t = (z - lo)[:, None, None].astype(np.float32)
    linear = (1 - t) * image[lo] + t * image[lo + 1]
    nearest = image[np.floor(z + 0.5).astype(int)]  # ties (none at 5 mm) go up
    return {"image": image, "spacing": tuple(spacing), "linear": linear.astype(np.float32),
            "nearest": nearest.astype(np.float32), "upsampled_spacing": (1.0,) + tuple(spacing[1:]),
            "source": f"dipy aniso_vox.nii.gz ({' x '.join(f'{z:g}' for z in zooms)} mm, real brain MRI)"}
