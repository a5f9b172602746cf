"""Real public volumes named in the manifests' ``volumes`` (loader ``real_volumes``), read after
``companion data fetch ID``.

>>> from companion.data import real
>>> real.names("topcow_roi")[:2]
['topcow_mr_roi_003.nii.gz', 'topcow_mr_roi_014.nii.gz']
>>> v = real.load("topcow_roi", "topcow_mr_roi_003.nii.gz")   # RealVolume: array, spacing, labels, source, kind
>>> images, labels = real.load_vesselmnist3d(size=64, split="train")

``kind`` says what the array is: ``"image"`` (values as stored, with the file's NIfTI scaling applied), ``"labels"``
(int32; float-stored label maps are cast after checking that every value is an integer) or ``"mask"`` (bool:
``value > threshold``, threshold 0 unless the manifest gives one, e.g. 0.5 for the BraTS brain masks). ``spacing`` is
the voxel size in mm in the array's axis order: the NIfTI header's (the header may leave the unit unset; see the
manifest's caveats), or the manifest's, or None where the source records no voxel size (TIFF stacks, .npz files).
Nothing here downloads: a dataset that is not fetched fails with the command that fetches it.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .download import MARKER, dataset_dir, local_path
from .integrity import DataAccessError
from .loaders import _read_npz, _read_nifti, _read_tiff
from .manifests import Manifest, get_manifest


@dataclass(frozen=True)
class RealVolume:
    array: np.ndarray
    spacing: tuple[float, ...] | None  # mm, in the array's axis order; None: not recorded by the source
    labels: dict[int, str] | None  # label value -> name (labels and masks), None when the source names none
    source: str  # "<manifest id>/<file name>[:<array key>]"
    kind: str  # "image", "labels" or "mask"


def _volume_name(v: dict) -> str:
    return v["file"] + (f":{v['key']}" if v.get("key") else "")


def _manifest(dataset_id: str) -> Manifest:
    m = get_manifest(dataset_id)
    if not m.volumes:
        hint = " (use companion.data.real.load_vesselmnist3d)" if m.id == "vesselmnist3d" else ""
        raise ValueError(f"{m.id}: the manifest lists no volumes for companion.data.real{hint}; datasets with "
                         f"volumes: run `companion data list` and look for loader real_volumes")
    return m


def names(dataset_id: str) -> list[str]:
    """The volumes of a dataset, in the manifest's order: file names, with ``:key`` for an array inside ``.npz``."""
    return [_volume_name(v) for v in _manifest(dataset_id).volumes]


def _ready_file(m: Manifest, file: str) -> Path:
    """The file on disk after a fetch, with a cheap check (marker present, size as recorded); `companion data
    verify ID` checks every hash."""
    path = local_path(m, file)
    rf = next(f for f in m.local_files() if f.name == file)
    fetch = f"companion data fetch {m.id}"
    if not (dataset_dir(m.id) / MARKER).exists() or not path.is_file():
        raise DataAccessError(f"{m.id} is not ready in {dataset_dir(m.id)} ({file} missing): run `{fetch}` "
                              f"(add --mirror DIR to copy from a local mirror; COMPANION_DATA sets the data folder)")
    if rf.size_bytes is not None and path.stat().st_size != rf.size_bytes:
        raise DataAccessError(f"{m.id}: {path} has {path.stat().st_size} bytes, the manifest says {rf.size_bytes}; "
                              f"run `companion data verify {m.id}`, then `{fetch}`")
    return path


def _as_labels(array: np.ndarray, source: str) -> np.ndarray:
    if np.issubdtype(array.dtype, np.integer):
        return array.astype(np.int32, copy=False)
    rounded = np.rint(array)
    if not np.array_equal(rounded, array):
        raise ValueError(f"{source}: label map holds non-integer values; it is not a label map as the manifest says")
    return rounded.astype(np.int32)


def load(dataset_id: str, name: str | None = None) -> RealVolume:
    """One volume of a fetched dataset (default: the first of :func:`names`)."""
    m = _manifest(dataset_id)
    known = {_volume_name(v): v for v in m.volumes}
    if name is None:
        name = next(iter(known))
    if name not in known:
        raise KeyError(f"{m.id}: no volume {name!r}; volumes: {', '.join(known)}")
    v = known[name]
    path = _ready_file(m, v["file"])
    source = f"{m.id}/{name}"
    if path.name.endswith((".nii", ".nii.gz")):
        array, spacing = _read_nifti(path)
    elif path.suffix == ".npz":
        array, spacing = _read_npz(path, v["key"]), None
    elif path.suffix in (".tif", ".tiff"):
        array, spacing = _read_tiff(path), None
    else:
        raise ValueError(f"{source}: no reader for {path.suffix!r} files")
    if v.get("spacing") is not None:
        spacing = tuple(float(x) for x in v["spacing"])
    if spacing is not None and len(spacing) != array.ndim:
        raise ValueError(f"{source}: spacing {spacing} does not fit an array of shape {array.shape}")
    array = np.asarray(array)
    if v["kind"] == "labels":
        array = _as_labels(array, source)
    elif v["kind"] == "mask":
        array = array > v.get("threshold", 0)
    labels = {int(k): str(n) for k, n in v["labels"].items()} if v.get("labels") else None
    return RealVolume(array=array, spacing=spacing, labels=labels, source=source, kind=v["kind"])


def load_vesselmnist3d(size: int = 64, split: str = "train") -> tuple[np.ndarray, np.ndarray]:
    """VesselMNIST3D after ``companion data fetch vesselmnist3d``: (images bool (N, D, H, W), labels int64 (N,),
    0 vessel / 1 aneurysm). `size` 64 (vesselmnist3d_64.npz) or 28 (vesselmnist3d.npz); `split` train, val, test."""
    if size not in (28, 64):
        raise ValueError(f"vesselmnist3d: size {size!r} unknown; choose 64 or 28")
    if split not in ("train", "val", "test"):
        raise ValueError(f"vesselmnist3d: split {split!r} unknown; choose train, val or test")
    m = get_manifest("vesselmnist3d")
    path = _ready_file(m, "vesselmnist3d_64.npz" if size == 64 else "vesselmnist3d.npz")
    images = _read_npz(path, f"{split}_images") > 0  # stored as uint8 {0, 255}
    labels = _read_npz(path, f"{split}_labels").reshape(-1).astype(np.int64)
    if images.shape[1:] != (size,) * 3 or len(images) != len(labels):
        raise ValueError(f"{path}: {split} images {images.shape} and labels {labels.shape} are not {size}^3 volumes "
                         f"with one label each")
    return images, labels
