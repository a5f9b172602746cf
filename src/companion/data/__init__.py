"""Data layer: manifests of the papers' datasets, verified downloads, offline stand-ins (procedural vessel trees,
volumes shipped inside PyPI packages)."""
from .download import ChecksumError, DataAccessError, UnsafeArchiveError, data_root, fetch, status, verify
from .loaders import LayoutError, Sample, iter_samples
from .manifests import Manifest, get_manifest, load_manifests

__all__ = ["ChecksumError", "DataAccessError", "LayoutError", "Manifest", "Sample", "UnsafeArchiveError",
           "data_root", "fetch", "get_manifest", "iter_samples", "load_manifests", "status", "verify"]
