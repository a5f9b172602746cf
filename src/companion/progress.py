"""Progress bars that the book's build can switch off.

Executed notebooks become static pages, where a tqdm bar is a widget that needs scripts from the network; the build
sets ``TQDM_DISABLE=1`` while it executes the chapters.  tqdm honours that variable only for arguments a call does
not pass, and ``tqdm.notebook`` always passes ``disable``, so every bar of the package goes through :func:`progress`.
"""
from __future__ import annotations

import os
from typing import Any


def disabled_by_environment() -> bool:
    return os.environ.get("TQDM_DISABLE", "").strip().lower() in ("1", "true", "yes")


def progress(iterable: Any = None, **kwargs: Any):
    """``tqdm.auto.tqdm(iterable, **kwargs)``, disabled when ``TQDM_DISABLE`` is set."""
    from tqdm.auto import tqdm

    if disabled_by_environment():
        kwargs["disable"] = True
    return tqdm(iterable, **kwargs)
