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
