"""Real volumes that ship inside PyPI packages, so they load offline.

* ``mni152``: nilearn's MNI152 2009 T1 template with grey/white-matter probability maps (2 mm).
* ``dipy_aniso_vox``: dipy's ``aniso_vox.nii.gz``, a real brain MRI at 4 x 4 x 5 mm (anisotropic voxels).
* ``nibabel_anatomical``: nibabel's test file ``anatomical.nii``.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class Volume:
    """A real 3D volume with its voxel spacing (mm) and where it came from."""

    name: str
    array: np.ndarray
    spacing: tuple[float, float, float]
    source: str


PACKAGED = ("mni152", "dipy_aniso_vox", "nibabel_anatomical")


def locate(dataset_id: str) -> Path:
    """File path of a packaged dataset (raises ImportError/FileNotFoundError if the package lacks it)."""
    if dataset_id == "mni152":
        import nilearn.datasets

        return Path(nilearn.datasets.__file__).parent / "data"
    if dataset_id == "dipy_aniso_vox":
        from dipy.data import get_fnames

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            path = Path(get_fnames(name="aniso_vox"))
    elif dataset_id == "nibabel_anatomical":
        from nibabel.testing import data_path

        path = Path(data_path) / "anatomical.nii"
    else:
        raise KeyError(f"{dataset_id!r} is not a packaged dataset; packaged: {', '.join(PACKAGED)}")
    if not path.exists():
        raise FileNotFoundError(path)
    return path


def _from_nifti(name: str, img, source: str) -> Volume:
    arr = np.asarray(img.get_fdata(dtype=np.float32))
    if arr.ndim == 4:
        arr = arr[..., 0]
    spacing = tuple(float(s) for s in img.header.get_zooms()[:3])
    return Volume(name, arr, spacing, source)


def load(dataset_id: str, part: str = "t1") -> Volume:
    """Load a packaged volume. For ``mni152``, `part` is ``t1``, ``gm`` or ``wm``."""
    import nibabel as nib

    if dataset_id == "mni152":
        from nilearn import datasets

        loaders = {"t1": datasets.load_mni152_template, "gm": datasets.load_mni152_gm_template,
                   "wm": datasets.load_mni152_wm_template}
        if part not in loaders:
            raise ValueError(f"mni152 part {part!r} unknown; choose one of {', '.join(loaders)}")
        img = loaders[part](resolution=2)
        return _from_nifti(f"mni152-{part}", img, f"nilearn.datasets.{loaders[part].__name__}(resolution=2)")
    path = locate(dataset_id)
    return _from_nifti(dataset_id, nib.load(str(path)), str(path.name))
