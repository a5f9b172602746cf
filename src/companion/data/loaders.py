"""Read a downloaded dataset as (case, image, target) samples, following its manifest's ``loader`` and
``loader_args``.  One generic reader per file format; the manifest says where the files are:

``loader_args`` (all optional except ``images``)
    images      glob, relative to ``$COMPANION_DATA/<id>/``, matching one image file per case (sorted); or a list of
                globs, e.g. the same layout one folder deeper (BraTS 2019 as extracted or as placed)
    label_sub   ``[regex, replacement]`` turning an image path (relative, '/'-separated) into its label path
    unlabelled  ``error`` (default: an image without its label file means the layout is wrong) or ``skip`` (the
                release also holds unannotated images, e.g. TopCoW 2024's validation images: they are not paired)
    unlabelled_images  glob or list of globs of images that have no label at all (read only with
                ``split="unlabelled"``); ``label_sub`` must match every image of ``images`` that is not one of these
    case        regex whose first group, searched in the image path, is the case id (default: the file stem); a
                case id must be unique
    channel     index along the last axis to keep when an image file holds several channels (a 4-D array, e.g.
                two stains in one file); 3-D images are read as they are
    spacing     voxel size in the array's axis order, replacing the file header's (for releases whose headers hold a
                placeholder such as 1 x 1 x 1)
    key         array key inside ``.npz`` files (npz_arrays; default "data")
    file        the ``.npz`` file (medmnist_npz)

``split`` for the paired loaders: ``None`` or ``"labelled"`` (image and label pairs) or ``"unlabelled"`` (images
without a label, ``target=None``: ``unlabelled_images`` and, with ``unlabelled: skip``, the images whose label file
is absent).  Loaders never download; a dataset that is not ready fails with the command that fetches or verifies it.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

from .download import dataset_dir, verify
from .manifests import Manifest, get_manifest


@dataclass(frozen=True)
class Sample:
    case: str
    image: np.ndarray
    target: np.ndarray | int | None  # label map, class index, or None (unlabelled)
    spacing: tuple[float, ...]
    path: str


class LayoutError(FileNotFoundError):
    """The files on disk do not match the manifest's layout; the message shows what was looked for."""


def _patterns(value: str | list[str] | None) -> list[str]:
    return [] if not value else [value] if isinstance(value, str) else list(value)


def _glob(root: Path, patterns: list[str]) -> list[Path]:
    # skip hidden files such as the macOS "._name" companions some archives (e.g. MSD) carry
    return sorted({p for pat in patterns for p in root.glob(pat)
                   if p.is_file() and not any(part.startswith(".") for part in p.relative_to(root).parts)})


def _fix_hint(m: Manifest) -> str:
    return (f"Expected layout (from the manifest):\n{m.layout}\nIf the files on disk differ, fix loader_args in "
            f"{m.path}.")


def _image_paths(m: Manifest, root: Path) -> list[Path]:
    patterns = _patterns(m.loader_args.get("images"))
    if not patterns:
        raise LayoutError(f"{m.id}: manifest gives no loader_args.images glob; expected layout:\n{m.layout}")
    unlabelled = set(_glob(root, _patterns(m.loader_args.get("unlabelled_images"))))
    paths = [p for p in _glob(root, patterns) if p not in unlabelled]
    if not paths:
        raise LayoutError(f"{m.id}: no file matches {' or '.join(map(repr, patterns))} under {root}. "
                          + _fix_hint(m))
    return paths


def _case_id(m: Manifest, rel: str) -> str:
    rx = m.loader_args.get("case")
    if rx:
        found = re.search(rx, rel)
        if found:
            return found.group(1)
    name = Path(rel).name
    return name[: -len(".nii.gz")] if name.endswith(".nii.gz") else Path(rel).stem


def _label_path(m: Manifest, root: Path, rel: str) -> Path | None:
    sub = m.loader_args.get("label_sub")
    if not sub:
        return None
    pattern, repl = sub
    label, n = re.subn(pattern, repl, rel)
    if not n:  # the image would otherwise be paired with itself
        raise LayoutError(f"{m.id}: label_sub pattern {pattern!r} does not match image {rel}, so its label path is "
                          f"unknown. Fix label_sub or images in {m.path}; images that have no label belong under "
                          f"loader_args.unlabelled_images. Expected layout:\n{m.layout}")
    return root / label


def _unique_cases(m: Manifest, root: Path, rels: list[str]) -> None:
    seen: dict[str, str] = {}
    for rel in rels:
        case = _case_id(m, rel)
        if case in seen:
            raise LayoutError(f"{m.id}: case {case!r} found twice, {seen[case]} and {rel} under {root} (the data "
                              f"placed at two depths?); keep one copy. Expected layout:\n{m.layout}")
        seen[case] = rel


def _pairs(m: Manifest, root: Path) -> list[tuple[str, Path | None]]:
    """(image path relative to `root`, label path or None) for every case, checked before anything is read."""
    paths = _image_paths(m, root)
    skip = m.loader_args.get("unlabelled", "error") == "skip"
    pairs: list[tuple[str, Path | None]] = []
    for p in paths:
        rel = p.relative_to(root).as_posix()
        label = _label_path(m, root, rel)
        if label is not None and not label.exists():
            if skip:  # an unannotated image the release is known to hold (manifest: unlabelled: skip)
                continue
            raise LayoutError(f"{m.id}: label {label} for image {rel} not found (label_sub "
                              f"{m.loader_args['label_sub']!r}). Put the label there, or fix label_sub in {m.path} "
                              f"(if the release also holds unannotated images there, set unlabelled: skip). "
                              f"Expected layout:\n{m.layout}")
        pairs.append((rel, label))
    if not pairs:
        raise LayoutError(f"{m.id}: none of the {len(paths)} image(s) under {root} has its label (label_sub "
                          f"{m.loader_args['label_sub']!r}); expected layout:\n{m.layout}")
    _unique_cases(m, root, [rel for rel, _ in pairs])
    return pairs


def _unlabelled(m: Manifest, root: Path) -> list[str]:
    """Images without a label (relative to `root`): ``unlabelled_images``, plus, with ``unlabelled: skip``, the images
    of ``images`` whose label file is absent."""
    patterns = _patterns(m.loader_args.get("unlabelled_images"))
    rels = [p.relative_to(root).as_posix() for p in _glob(root, patterns)]
    if m.loader_args.get("unlabelled") == "skip":
        for p in _glob(root, _patterns(m.loader_args.get("images"))):
            rel = p.relative_to(root).as_posix()
            if rel not in rels and not _label_path(m, root, rel).exists():
                rels.append(rel)
    if not rels:
        where = (f"no file matches loader_args.unlabelled_images {' or '.join(map(repr, patterns))} under {root}"
                 if patterns else "the manifest gives no loader_args.unlabelled_images glob")
        raise LayoutError(f"{m.id}: no unlabelled image: {where}. " + _fix_hint(m))
    rels.sort()
    _unique_cases(m, root, rels)
    return rels


def _read_nifti(path: Path) -> tuple[np.ndarray, tuple[float, ...]]:
    import nibabel as nib

    img = nib.load(str(path))
    return np.asanyarray(img.dataobj), tuple(float(z) for z in img.header.get_zooms()[:3])


def _read_npz(path: Path, key: str) -> np.ndarray:
    with np.load(path) as z:
        if key not in z:
            raise LayoutError(f"{path}: no array {key!r}; arrays: {', '.join(z.files)}")
        return z[key]


def _read_tiff(path: Path) -> np.ndarray:
    import tifffile

    return np.asarray(tifffile.imread(str(path)))


def _image(m: Manifest, reader: Callable[[Path], tuple[np.ndarray, tuple[float, ...]]],
           path: Path) -> tuple[np.ndarray, tuple[float, ...]]:
    """An image as the manifest asks for it: one channel of a multi-channel file, its spacing replaced."""
    image, spacing = reader(path)
    channel = m.loader_args.get("channel")
    if channel is not None and image.ndim == 4:
        if channel >= image.shape[-1]:
            raise LayoutError(f"{m.id}: {path} has {image.shape[-1]} channel(s) (shape {image.shape}), no channel "
                              f"{channel}; fix loader_args.channel in {m.path}")
        image = image[..., channel]
    given = m.loader_args.get("spacing")
    if given is not None:
        if len(given) != image.ndim:
            raise LayoutError(f"{m.id}: loader_args.spacing {given} has {len(given)} values but {path} is a "
                              f"{image.ndim}-D array of shape {image.shape}; fix spacing in {m.path}")
        spacing = tuple(float(v) for v in given)
    return image, spacing


def _paired(reader: Callable[[Path], tuple[np.ndarray, tuple[float, ...]]]):
    def load(m: Manifest, root: Path, split: str | None) -> Iterator[Sample]:
        if split in (None, "labelled"):
            for rel, lab in _pairs(m, root):
                image, spacing = _image(m, reader, root / rel)
                target = reader(lab)[0] if lab is not None else None
                yield Sample(_case_id(m, rel), image, target, spacing, rel)
        elif split == "unlabelled":
            for rel in _unlabelled(m, root):
                image, spacing = _image(m, reader, root / rel)
                yield Sample(_case_id(m, rel), image, None, spacing, rel)
        else:
            raise ValueError(f"{m.id}: split {split!r} unknown; choose 'labelled' (image and label pairs, the "
                             f"default) or 'unlabelled' (images without a label, target None)")

    return load


def _medmnist(m: Manifest, root: Path, split: str | None) -> Iterator[Sample]:
    split = split or "train"
    if split not in ("train", "val", "test"):
        raise ValueError(f"{m.id}: split {split!r} unknown; choose train, val or test")
    path = root / m.loader_args.get("file", f"{m.id}.npz")
    if not path.exists() and (root / "raw" / path.name).exists():  # where `companion data fetch` puts it
        path = root / "raw" / path.name
    if not path.exists():
        raise LayoutError(f"{m.id}: {path} not found; expected layout:\n{m.layout}")
    with np.load(path) as z:
        images, labels = z[f"{split}_images"], z[f"{split}_labels"]
    for i, (img, lab) in enumerate(zip(images, labels)):
        yield Sample(f"{split}-{i:05d}", img, int(np.ravel(lab)[0]), (1.0,) * img.ndim, path.name)


def _npz(m: Manifest, root: Path, split: str | None) -> Iterator[Sample]:
    key = m.loader_args.get("key", "data")
    return _paired(lambda p: (_read_npz(p, key), (1.0, 1.0, 1.0)))(m, root, split)


READERS: dict[str, Callable[[Manifest, Path, str | None], Iterator[Sample]]] = {
    "nifti_pairs": _paired(_read_nifti),
    "nifti_folder": _paired(_read_nifti),
    "neurite_oasis": _paired(_read_nifti),
    "npz_arrays": _npz,
    "medmnist_npz": _medmnist,
    "tiff_stack": _paired(lambda p: (_read_tiff(p), (1.0, 1.0, 1.0))),
}


def iter_samples(dataset_id: str, *, split: str | None = None, limit: int | None = None,
                 check: bool = True) -> Iterator[Sample]:
    """Samples of a dataset on disk, in a stable order. `check` first verifies the dataset against its manifest."""
    m = get_manifest(dataset_id)
    if m.loader == "none" or m.loader not in READERS:
        raise ValueError(f"{m.id}: no loader (manifest says loader: {m.loader}); layout:\n{m.layout}")
    if check:
        problems = verify(m.id)
        if problems:
            raise LayoutError(f"{m.id} is not ready:\n" + "\n".join(problems))
    for i, s in enumerate(READERS[m.loader](m, dataset_dir(m.id), split)):
        if limit is not None and i >= limit:
            return
        yield s


def describe(dataset_id: str) -> dict[str, Any]:
    """The loader and its arguments for a dataset (what a chapter will read)."""
    m = get_manifest(dataset_id)
    return {"id": m.id, "loader": m.loader, "loader_args": dict(m.loader_args), "layout": m.layout}
