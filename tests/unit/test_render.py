import os
import subprocess
import sys

import numpy as np

from companion.render import mip, render_surface


def test_render_surface_offscreen():
    v = np.zeros((24, 24, 24), bool)
    v[4:20, 10:14, 10:14] = True
    radius = np.where(v, np.linspace(1, 3, 24)[:, None, None], 0).astype(np.float32)
    img = render_surface(v, radius, size=128, cmap="plasma", clim=(0, 3))
    assert img.shape == (128, 128, 3) and img.dtype == np.uint8
    non_white = (img < 250).any(axis=2).mean()
    assert 0.01 < non_white < 0.9, "the object is drawn and does not fill the frame"
    assert mip(v, 0).shape == (24, 24) and mip(v, 0).sum() == 16


def _render_in_subprocess(prelude: str = "") -> subprocess.CompletedProcess:
    code = ("import numpy as np\nimport companion.render as r\n" + prelude +
            "v = np.zeros((8, 8, 8), bool)\nv[2:6, 2:6, 2:6] = True\nr.render_surface(v, size=32)\n")
    env = {k: v for k, v in os.environ.items() if k != "DISPLAY"}  # as on the machines that build the book
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)


def test_render_surface_prints_no_vtk_warnings():
    """VTK's warnings (e.g. 'bad X server connection' before it falls back to off-screen rendering) go to the
    process's stderr, which Jupyter prints into the book's pages; render_surface keeps them quiet."""
    out = _render_in_subprocess()
    assert out.returncode == 0, out.stderr
    assert "WARN" not in out.stderr and "bad X server" not in out.stderr, out.stderr
