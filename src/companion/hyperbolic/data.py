"""Data for chapter 3: a synthetic hierarchical dataset, an offline brain-tumour stand-in, and the real BraTS path.

Paper facts
-----------
- Hsu, Gu et al. (2021), Sec. 4.1: a "biologically-inspired" synthetic dataset "inspired by cryo-ET images of
  cells".  Each volume has "multiple levels of hierarchy with the objects at each level differentiated by texture,
  size, and shape"; volumes are 50 x 50 x 50; 120 volumes split 80 / 20 / 20.  Segmentation is scored at three
  levels of the hierarchy (average class Dice after Hungarian matching, Tables 1 and 2).  A harder "irregular"
  version, "where the boundaries of each shape are perturbed", is described in their Appendix A.5 (not in the text
  we have).  The generator itself is not public.
- Sec. 4.2: BraTS 2019, FLAIR modality only, 259 HGG training cases split 180 / 39 / 40, scans of
  200 x 200 x 155; the task is the whole tumour (WT), "detectable solely from FLAIR", scored by Dice and
  Hausdorff distance.

Our choices
-----------
Synthetic volumes (:func:`synthetic_volume`)
  - Three nested levels with ``LEVEL_CLASSES = (2, 4, 8)`` classes.  Level 1: background / cell.  Level 2:
    background / cytoplasm / organelle A (roundish, larger, "nucleus-like") / organelle B (elongated,
    "mitochondrion-like").  Level 3 splits each level-2 class once more by adding small structures: nucleolus-like
    blobs inside A, small blobs inside B, granules in the cytoplasm, particles in the background medium.  The
    level-3 label determines the others (``COARSEN``), so the levels are a strict refinement.
  - Sizes scale with ``size`` (numbers below as fractions of it): 1 cell (semi-axes 0.30-0.40, wholly inside)
    or 2 cells (0.25-0.32, may be cut by the border); 2-4 organelles per cell, at least one of each type
    (A: semi-axes 0.10-0.13, near-spherical; B: 0.13-0.15 long, 0.08-0.09 short); small structures of radius
    0.03-0.05 (1.5-2.5 voxels at 50).  Every shape is a randomly rotated ellipsoid; a child is drawn only where
    its parent class is, so nesting holds by construction.  An organelle's position is accepted once 90 % of it lies in
    the cell and it does not touch another organelle; after 50 tries the best non-touching try is kept if at least
    half of it lies in the cell, else the organelle is skipped.
  - Irregular variant: each object is the zero sub-level set of ``g = sqrt(q) - 1 + a * n``, where ``q`` is the
    ellipsoid's quadratic form and ``n`` a smooth unit-variance noise field with a correlation length matched to
    the object's scale (cells 0.10, organelles 0.05, small structures 0.03 of ``size``) and ``a`` = 0.10, 0.15,
    0.20 (noise clipped to +-3).  The regular variant uses ``a = 0``.  The noise fields are drawn in both variants,
    so the cells of a seed are the same draws; later positions may differ, since which tries are accepted depends
    on the shapes.
  - Appearance: level-3 class ``k`` gets mean ``_MEAN[k]`` plus its own texture, a Gaussian-filtered noise field of
    correlation length ``_TEX_SIGMA[k]`` (scaled with ``size``) and amplitude ``_TEX_AMP[k]``.  The clean phantom
    is then blurred (Gaussian PSF, sigma 0.8 voxel at 50) and white Gaussian noise (std 0.08) is added, then the
    image is clipped to [0, 1].  A and B have close means (0.55 / 0.48) and differ mainly in texture (coarse
    mottle vs. fine grain); neighbouring means are 0.1-0.2 apart while the texture plus noise spread is ~0.1, so
    classes overlap partly and thresholding alone does not separate them.
  - Seeds: ``numpy.random.default_rng(seed)``; volume ``i`` of :func:`synthetic_set` uses the first word of
    ``SeedSequence([seed, i])``.

Brain stand-in (:func:`brain_standin`), used when BraTS is not on disk
  - Anatomy: nilearn's MNI152 2009 template (2 mm) grey- and white-matter probability maps.  Brain mask:
    ``gm + wm > 0.2`` with holes filled (so the ventricles are inside).  CSF probability inside the mask is
    ``clip(1 - gm - wm, 0, 1)``.  The template is cropped to the mask's bounding box (2-voxel margin) and resized
    to a cube of ``size`` voxels (aspect ratio not kept) once per ``size`` (cached).
  - Per subject: a smooth random displacement (Gaussian-filtered noise, sigma 0.15 ``size``, at most ~1.5 voxels)
    applied to the maps and the mask.
  - FLAIR-like contrast: ``I = 0.08 csf + 0.62 gm + 0.48 wm`` in the brain (CSF suppressed, grey matter brighter
    than white matter, as on FLAIR), 0 outside (skull-stripped, like BraTS).
  - Lesion: a perturbed sphere (whole tumour, WT) centred on a white-matter voxel (wm > 0.5) deep enough in the
    brain, radius set so the WT is 1-6 % of the brain volume (before clipping to the brain), with a perturbed
    enhancing core (0.45-0.65 of the WT radius) and a necrotic centre (0.4-0.6 of the core radius), each clipped
    to its parent.  Intensities: oedema 0.90, enhancing 0.72, necrosis 0.32, each with a little texture
    (hyperintense oedema as on FLAIR; necrotic fluid darker).
  - Then a mild blur (sigma 0.6 voxel), a multiplicative bias field ``exp(b)`` with ``b`` a very smooth field
    (max ~ +-0.15), Gaussian noise (std 0.03) in the brain, and normalisation: divide by the 99.5th percentile of
    the brain, clip to [0, 1].
  - Labels: 0 background, 1 brain, 2 whole tumour; ``tumour``: 0 none, 1 oedema, 2 enhancing, 3 necrosis.

Real data (:func:`load_brain_dataset`)
  - ``msd_task01_braintumour`` (FLAIR = channel 0 of the 4-D image; labels 1 oedema, 2 non-enhancing tumour,
    3 enhancing) and ``brats2019`` (``*_flair`` file and ``*_seg``; labels 1 NCR/NET, 2 oedema, 4 enhancing).
    WT = label > 0.  ``tumour`` uses the stand-in's codes: oedema -> 1, enhancing -> 2, necrotic /
    non-enhancing core -> 3.
  - Normalisation: clip to the 99.5th percentile of the nonzero voxels, min-max to [0, 1].  Crop to the bounding
    box of the nonzero voxels, resize to a cube (image: Gaussian anti-aliasing with sigma ``(f - 1) / 2`` for a
    shrink factor ``f``, then linear interpolation; labels: nearest neighbour).  Brain mask: normalised image
    > 0.02 (BraTS volumes are skull-stripped with a background of exactly 0), plus every tumour voxel.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Iterable

import numpy as np
from scipy import ndimage as ndi

LEVEL_CLASSES = (2, 4, 8)
CLASS_NAMES_L1 = ("background", "cell")
CLASS_NAMES_L2 = ("background", "cytoplasm", "organelle A (nucleus-like)", "organelle B (mitochondrion-like)")
CLASS_NAMES_L3 = ("background medium", "cytoplasm", "A interior", "B interior", "nucleolus in A",
                  "granule in B", "cytoplasmic granule", "background particle")
COARSEN = {3: np.array([0, 1, 2, 3, 2, 3, 1, 0], dtype=np.uint8),  # level-3 label -> level-2 label
           2: np.array([0, 1, 1, 1], dtype=np.uint8)}  # level-2 label -> level-1 label

# appearance per level-3 class (see the module docstring); sigmas in voxels at size 50
_MEAN = np.array([0.18, 0.38, 0.55, 0.48, 0.75, 0.28, 0.60, 0.45], dtype=np.float32)
_TEX_AMP = np.array([0.04, 0.07, 0.10, 0.06, 0.04, 0.04, 0.04, 0.04], dtype=np.float32)
_TEX_SIGMA = (0.6, 1.2, 2.5, 0.7, 0.8, 0.8, 0.8, 0.8)
_PSF_SIGMA, _NOISE_STD = 0.8, 0.08
_IRREGULAR = {"cell": (0.10, 0.10), "organelle": (0.15, 0.05), "small": (0.20, 0.03)}  # (amplitude, corr. / size)


def coarsen(l3: np.ndarray, level: int) -> np.ndarray:
    """Labels at `level` (1, 2 or 3) from level-3 labels."""
    if level not in (1, 2, 3):
        raise ValueError(f"level must be 1, 2 or 3, got {level}")
    out = np.asarray(l3, dtype=np.uint8)
    if level <= 2:
        out = COARSEN[3][out]
    if level == 1:
        out = COARSEN[2][out]
    return out


@dataclass(frozen=True)
class SyntheticVolume:
    """``image`` float32 (size,)*3 in [0, 1]; ``levels`` uint8 (3, size, size, size): levels 1, 2, 3."""

    image: np.ndarray
    levels: np.ndarray
    seed: int
    irregular: bool

    def level(self, k: int) -> np.ndarray:
        return self.levels[k - 1]


def _rotation(rng: np.random.Generator) -> np.ndarray:
    q, r = np.linalg.qr(rng.standard_normal((3, 3)))
    q = q * np.sign(np.diag(r))
    if np.linalg.det(q) < 0:
        q[:, 0] = -q[:, 0]
    return q


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, ...], sigma: float) -> np.ndarray:
    """Gaussian-filtered white noise scaled to unit standard deviation (float32)."""
    n = ndi.gaussian_filter(rng.standard_normal(shape, dtype=np.float32), sigma, mode="wrap")
    return n / max(float(n.std()), 1e-8)


class _Scene:
    """Draws ellipsoids into a level-3 label volume; each shape is evaluated only in its bounding box."""

    def __init__(self, size: int, perturb: dict[str, tuple[float, np.ndarray]] | None):
        self.size = size
        self.labels = np.zeros((size,) * 3, dtype=np.uint8)
        self.perturb = perturb or {}

    def shape_mask(self, centre, axes, rot, kind: str):
        """(slices, boolean mask) of a (perturbed) rotated ellipsoid, clipped to the volume; None if outside."""
        amp, field = self.perturb.get(kind, (0.0, None))
        reach = float(max(axes)) * (1.0 + 3.0 * amp) + 1.0
        lo = np.maximum(np.floor(np.asarray(centre) - reach).astype(int), 0)
        hi = np.minimum(np.ceil(np.asarray(centre) + reach).astype(int) + 1, self.size)
        if np.any(hi <= lo):
            return None
        sl = tuple(slice(a, b) for a, b in zip(lo, hi))
        grids = np.meshgrid(*[np.arange(a, b, dtype=np.float32) - c for a, b, c in zip(lo, hi, centre)],
                            indexing="ij")
        d = np.stack(grids, axis=-1) @ rot.astype(np.float32)  # coordinates in the ellipsoid's frame
        g = np.sqrt(((d / np.asarray(axes, dtype=np.float32)) ** 2).sum(-1)) - 1.0
        if field is not None:
            g = g + amp * np.clip(field[sl], -3, 3)
        return sl, g < 0

    def paint(self, centre, axes, rot, kind: str, label: int, parent: Iterable[int]) -> int:
        """Set `label` where the shape covers a voxel of a `parent` class; returns the voxels painted."""
        got = self.shape_mask(centre, axes, rot, kind)
        if got is None:
            return 0
        sl, m = got
        m = m & np.isin(self.labels[sl], list(parent))
        self.labels[sl][m] = label
        return int(m.sum())


def _point_in(rng, centre, axes, rot, rmax: float) -> np.ndarray:
    """A random point within normalised radius `rmax` of an ellipsoid (uniform in the ellipsoid's volume)."""
    v = rng.standard_normal(3)
    v *= rmax * rng.random() ** (1 / 3) / np.linalg.norm(v)
    return np.asarray(centre) + rot @ (v * np.asarray(axes))


def _random_voxel(rng, labels: np.ndarray, cls: int):
    idx = np.flatnonzero(labels == cls)
    if idx.size == 0:
        return None
    return np.array(np.unravel_index(rng.choice(idx), labels.shape), dtype=float)


def synthetic_volume(seed: int, size: int = 50, irregular: bool = False) -> SyntheticVolume:
    """One cryo-ET-inspired volume with three nested label levels (see the module docstring)."""
    if size < 16:
        raise ValueError(f"size must be at least 16 voxels, got {size}")
    rng = np.random.default_rng(seed)
    shape = (size,) * 3
    s = size / 50.0
    # the perturbation fields are drawn in both variants so the object draws below are identical
    fields = {k: (amp, _smooth_noise(rng, shape, corr * size)) for k, (amp, corr) in _IRREGULAR.items()}
    scene = _Scene(size, fields if irregular else None)

    # level 1: cells
    n_cells = int(rng.integers(1, 3))
    cells = []
    for _ in range(n_cells):
        axes = rng.uniform(0.30, 0.40, 3) * size if n_cells == 1 else rng.uniform(0.25, 0.32, 3) * size
        margin = axes.max() if n_cells == 1 else 0.85 * axes.max()
        for _try in range(10):
            centre = rng.uniform(margin, size - 1 - margin, 3)
            if all(np.linalg.norm(centre - c) > 0.8 * (axes.max() + a.max()) for c, a, _ in cells):
                break
        rot = _rotation(rng)
        cells.append((centre, axes, rot))
        scene.paint(centre, axes, rot, "cell", 1, parent=(0,))

    # level 2: organelles A (2) and B (3), 2-4 per cell, both types
    organelles = []
    for c_centre, c_axes, c_rot in cells:
        n_org = int(rng.integers(2, 5))
        kinds = [3, 2] + [int(k) for k in rng.choice([2, 3], n_org - 2)]  # the elongated B is the harder fit: first
        for kind in kinds:
            if kind == 2:
                axes = rng.uniform(0.10, 0.13) * rng.uniform(0.9, 1.1, 3) * size
            else:
                axes = np.array([rng.uniform(0.13, 0.15), *rng.uniform(0.08, 0.09, 2)]) * size
            best = None  # (fraction inside the cytoplasm, centre, rotation) of the best free-standing try
            for _try in range(50):
                centre = _point_in(rng, c_centre, c_axes, c_rot, 0.7)
                rot = _rotation(rng)
                got = scene.shape_mask(centre, axes, rot, "organelle")
                if got is None or not got[1].any():
                    continue
                sl, m = got
                if np.isin(scene.labels[sl][ndi.binary_dilation(m)], (2, 3)).any():
                    continue
                inside = float((scene.labels[sl][m] == 1).mean())
                if best is None or inside > best[0]:
                    best = (inside, centre, rot)
                if inside >= 0.9:
                    break
            if best is not None and best[0] >= 0.5:
                scene.paint(best[1], axes, best[2], "organelle", kind, parent=(1,))
                organelles.append((best[1], axes, best[2], kind))

    # level 3: small structures (radius 0.03-0.05 of size, mildly ellipsoidal)
    def small_axes():
        return rng.uniform(0.03, 0.05) * rng.uniform(0.85, 1.15, 3) * size

    for centre, axes, rot, kind in organelles:
        for _ in range(int(rng.integers(1, 4)) if kind == 2 else int(rng.integers(1, 3))):
            p = _point_in(rng, centre, axes, rot, 0.45)
            scene.paint(p, small_axes(), _rotation(rng), "small", 4 if kind == 2 else 5, parent=(kind,))
    for _ in range(int(rng.integers(4, 9)) * n_cells):
        p = _random_voxel(rng, scene.labels, 1)
        if p is not None:
            scene.paint(p, small_axes(), _rotation(rng), "small", 6, parent=(1,))
    for _ in range(int(rng.integers(6, 13))):
        p = _random_voxel(rng, scene.labels, 0)
        if p is not None:
            scene.paint(p, small_axes(), _rotation(rng), "small", 7, parent=(0,))

    l3 = scene.labels
    # appearance: class mean + class texture, PSF blur, noise
    clean = _MEAN[l3].copy()
    for k in range(8):
        m = l3 == k
        tex = _smooth_noise(rng, shape, _TEX_SIGMA[k] * s)
        if m.any():
            clean[m] += _TEX_AMP[k] * tex[m]
    image = ndi.gaussian_filter(clean, _PSF_SIGMA * s) + _NOISE_STD * rng.standard_normal(shape, dtype=np.float32)
    image = np.clip(image, 0.0, 1.0).astype(np.float32)
    levels = np.stack([coarsen(l3, 1), coarsen(l3, 2), l3])
    return SyntheticVolume(image=image, levels=levels, seed=int(seed), irregular=bool(irregular))


def derived_seed(seed: int, i: int) -> int:
    """Seed of volume `i` of a set seeded with `seed`."""
    return int(np.random.SeedSequence([int(seed), int(i)]).generate_state(1)[0])


def synthetic_set(n: int, size: int = 50, seed: int = 0, irregular: bool = False) -> list[SyntheticVolume]:
    """`n` synthetic volumes; volume ``i`` uses ``derived_seed(seed, i)``."""
    return [synthetic_volume(derived_seed(seed, i), size=size, irregular=irregular) for i in range(n)]


# ---------------------------------------------------------------------------------------------------------------
# brain volumes

STANDIN_SOURCE = "offline stand-in: MNI152 2009 template (nilearn) with a synthetic FLAIR-like lesion"
_FLAIR = {"csf": 0.08, "gm": 0.62, "wm": 0.48}
_LESION = {1: 0.90, 2: 0.72, 3: 0.32}  # oedema, enhancing, necrosis


@dataclass(frozen=True)
class BrainVolume:
    """``image`` float32 cube in [0, 1]; ``labels`` uint8 0 background, 1 brain, 2 whole tumour; ``tumour`` uint8
    0 none, 1 oedema, 2 enhancing, 3 necrosis (real data: necrotic / non-enhancing core)."""

    image: np.ndarray
    labels: np.ndarray
    tumour: np.ndarray
    source: str
    case: str = ""


def _resize(arr: np.ndarray, size: int, order: int) -> np.ndarray:
    """Resize to a cube of `size` voxels (corner-aligned); with order >= 1, Gaussian anti-aliasing first."""
    arr = np.asarray(arr)
    if order > 0:
        f = np.asarray(arr.shape, float) / size
        sigma = np.maximum(0.0, (f - 1.0) / 2.0)
        arr = arr.astype(np.float32)
        if np.any(sigma > 0):
            arr = ndi.gaussian_filter(arr, sigma)
    coords = np.meshgrid(*[np.linspace(0, n - 1, size) for n in arr.shape], indexing="ij")
    return ndi.map_coordinates(arr, coords, order=order, mode="nearest")


def _bbox(mask: np.ndarray, margin: int = 0) -> tuple[slice, ...]:
    idx = np.nonzero(mask)
    if not idx[0].size:
        raise ValueError("empty mask: nothing to crop to")
    return tuple(slice(max(int(i.min()) - margin, 0), min(int(i.max()) + margin + 1, n))
                 for i, n in zip(idx, mask.shape))


@functools.lru_cache(maxsize=1)
def _mni152() -> tuple[np.ndarray, np.ndarray]:
    from companion.data.packaged import load

    return load("mni152", "gm").array, load("mni152", "wm").array


@functools.lru_cache(maxsize=4)
def _template_cube(size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(gm, wm, brain mask as float) of the template, cropped to the brain and resized to `size`^3."""
    gm, wm = _mni152()
    brain = ndi.binary_fill_holes((gm + wm) > 0.2)
    sl = _bbox(brain, margin=2)
    return tuple(_resize(a[sl].astype(np.float32), size, 1) for a in (gm, wm, brain))


def _perturbed_ball(rng, shape, centre, radius: float, amp: float = 0.25) -> np.ndarray:
    grids = np.meshgrid(*[np.arange(n, dtype=np.float32) - c for n, c in zip(shape, centre)], indexing="ij")
    r = np.sqrt(sum(g ** 2 for g in grids)) / radius
    return (r - 1.0 + amp * np.clip(_smooth_noise(rng, shape, max(radius / 2.5, 1.0)), -3, 3)) < 0


def brain_standin(seed: int, size: int = 48) -> BrainVolume:
    """A FLAIR-like brain with a synthetic glioma-like lesion (see the module docstring)."""
    if size < 16:
        raise ValueError(f"size must be at least 16 voxels, got {size}")
    rng = np.random.default_rng(seed)
    shape = (size,) * 3
    gm0, wm0, mask0 = _template_cube(size)

    # smooth random deformation (at most ~1.5 voxels)
    disp = np.stack([_smooth_noise(rng, shape, 0.15 * size) for _ in range(3)])
    disp *= 1.5 / max(float(np.abs(disp).max()), 1e-8)
    coords = np.indices(shape, dtype=np.float32) + disp
    gm, wm, maskf = (ndi.map_coordinates(a, coords, order=1, mode="nearest") for a in (gm0, wm0, mask0))
    brain = maskf > 0.5
    gm, wm = np.clip(gm, 0, 1), np.clip(wm, 0, 1)
    csf = np.clip(1.0 - gm - wm, 0, 1)
    image = np.where(brain, _FLAIR["csf"] * csf + _FLAIR["gm"] * gm + _FLAIR["wm"] * wm, 0.0).astype(np.float32)

    # lesion: WT > enhancing core > necrosis
    n_brain = int(brain.sum())
    frac = rng.uniform(0.01, 0.06)
    r_wt = (3 * frac * n_brain / (4 * np.pi)) ** (1 / 3)
    depth = ndi.distance_transform_edt(brain)
    ok = np.flatnonzero(((wm > 0.5) & (depth >= 0.8 * r_wt)).ravel())
    if ok.size == 0:
        ok = np.flatnonzero((depth >= depth.max() * 0.5).ravel())
    centre = np.array(np.unravel_index(rng.choice(ok), shape), dtype=float)
    wt = _perturbed_ball(rng, shape, centre, r_wt) & brain
    r_core = rng.uniform(0.45, 0.65) * r_wt
    core = _perturbed_ball(rng, shape, centre + rng.uniform(-0.2, 0.2, 3) * r_wt, r_core) & wt
    necro = _perturbed_ball(rng, shape, centre + rng.uniform(-0.15, 0.15, 3) * r_core,
                            rng.uniform(0.4, 0.6) * r_core) & core
    tumour = np.zeros(shape, dtype=np.uint8)
    tumour[wt], tumour[core], tumour[necro] = 1, 2, 3
    tex = _smooth_noise(rng, shape, 1.0)
    for k, value in _LESION.items():
        m = tumour == k
        image[m] = value + 0.04 * tex[m]

    # blur, bias field, noise, normalisation
    image = ndi.gaussian_filter(image, 0.6)
    bias = _smooth_noise(rng, shape, 0.3 * size)
    bias *= 0.15 / max(float(np.abs(bias).max()), 1e-8)
    image = image * np.exp(bias) + np.where(brain, 0.03 * rng.standard_normal(shape, dtype=np.float32), 0.0)
    image = np.where(brain, image, 0.0)
    image = np.clip(image / np.percentile(image[brain], 99.5), 0.0, 1.0).astype(np.float32)

    labels = brain.astype(np.uint8)
    labels[tumour > 0] = 2
    return BrainVolume(image=image, labels=labels, tumour=tumour, source=STANDIN_SOURCE, case=f"standin-{seed}")


def brain_set(n: int, size: int = 48, seed: int = 0) -> list[BrainVolume]:
    """`n` stand-in brains; brain ``i`` uses ``derived_seed(seed, i)``."""
    return [brain_standin(derived_seed(seed, i), size=size) for i in range(n)]


# real data: original label -> (1 oedema, 2 enhancing, 3 necrotic / non-enhancing core)
_TUMOUR_CODES = {"msd_task01_braintumour": {1: 1, 2: 3, 3: 2}, "brats2019": {1: 3, 2: 1, 4: 2}}
_BRAIN_THRESHOLD = 0.02


def _real_volume(image: np.ndarray, target: np.ndarray, codes: dict[int, int], size: int, source: str,
                 case: str) -> BrainVolume:
    image = np.asarray(image, dtype=np.float32)
    target = np.asarray(target).astype(np.int64)
    if image.shape != target.shape:
        raise ValueError(f"{case}: image shape {image.shape} and label shape {target.shape} differ")
    nonzero = image > 0
    sl = _bbox(nonzero)
    hi = float(np.percentile(image[nonzero], 99.5))
    image = np.clip(image[sl], None, hi)
    lo = float(image.min())
    image = (image - lo) / max(hi - lo, 1e-8)
    tumour = np.zeros(target.shape, dtype=np.uint8)
    for original, code in codes.items():
        tumour[target == original] = code
    image = np.clip(_resize(image, size, 1), 0.0, 1.0).astype(np.float32)
    tumour = _resize(tumour[sl], size, 0).astype(np.uint8)
    labels = (image > _BRAIN_THRESHOLD).astype(np.uint8)
    labels[tumour > 0] = 2
    return BrainVolume(image=image, labels=labels, tumour=tumour, source=source, case=case)


def load_brain_dataset(dataset_id: str, size: int = 48, limit: int | None = None,
                       check: bool = True) -> list[BrainVolume]:
    """FLAIR volumes with whole-tumour labels from a dataset on disk, as :class:`BrainVolume` cubes.

    `check` verifies the dataset against its manifest first (``companion.data.loaders.iter_samples``); when the
    data are missing that raises the loader's error, which names the command that fetches them.
    """
    from companion.data.loaders import iter_samples

    if dataset_id not in _TUMOUR_CODES:
        raise ValueError(f"dataset {dataset_id!r} unknown; choose one of {', '.join(_TUMOUR_CODES)}")
    out = []
    for s in iter_samples(dataset_id, limit=limit, check=check):
        image = np.asarray(s.image)
        if image.ndim == 4:  # MSD Task01 keeps all four channels; FLAIR is channel 0
            image = image[..., 0]
        if s.target is None:
            raise ValueError(f"{dataset_id}: case {s.case} has no label")
        out.append(_real_volume(image, s.target, _TUMOUR_CODES[dataset_id], size,
                                f"{dataset_id}: {s.path} (FLAIR)", s.case))
    return out
