"""Pictures of binary 3D volumes: maximum-intensity projections (matplotlib) and off-screen surface renders
(pyvista/VTK, EGL or OSMesa; no display needed).

The surface is the 0.5 iso-surface of the (1-voxel padded) binary map, optionally coloured by a per-voxel scalar
such as vessel radius or branch label, sampled at the surface points.
"""
from __future__ import annotations

import os
import warnings

import numpy as np


def mip(volume: np.ndarray, axis: int = 0) -> np.ndarray:
    """Maximum-intensity projection along `axis`."""
    return np.asarray(volume).max(axis=axis)


def quiet_vtk() -> None:
    """Keep VTK's warnings out of the notebook pages: VTK prints them to the process's stderr (which Jupyter shows
    under the cell), e.g. "bad X server connection" each time it tries an X display before falling back to
    off-screen rendering.  Errors still print; failures to render still raise in :func:`render_surface`."""
    from vtkmodules.vtkCommonCore import vtkLogger, vtkObject

    vtkLogger.SetStderrVerbosity(vtkLogger.VERBOSITY_ERROR)  # the logger VTK 9 prints its warnings with
    vtkObject.GlobalWarningDisplayOff()  # warnings sent to the output window (older code paths)


def render_surface(volume: np.ndarray, scalars: np.ndarray | None = None, *, size: int = 400,
                   cmap: str = "viridis", clim: tuple[float, float] | None = None,
                   elevation: float = 20.0, azimuth: float = 35.0, color: str = "#c0392b") -> np.ndarray:
    """RGB image (size x size x 3, uint8) of the surface of a binary volume, rendered off-screen.

    The camera frames the whole grid, not the foreground, so renders of volumes of one grid share one scale.
    `scalars` (same shape) colours the surface by the value of the nearest foreground voxel. Raises
    ``RuntimeError`` with advice when no off-screen OpenGL (EGL/OSMesa) is available.
    """
    import pyvista as pv
    from scipy import ndimage

    quiet_vtk()
    pv.OFF_SCREEN = True
    vol = np.pad(np.asarray(volume, dtype=np.float32), 1)
    if vol.max() <= 0:
        return np.full((size, size, 3), 255, np.uint8)
    grid = pv.ImageData(dimensions=vol.shape)
    grid.point_data["occ"] = vol.ravel(order="F")
    surf = grid.contour([0.5], scalars="occ")
    plotter = pv.Plotter(off_screen=True, window_size=(size, size))
    try:
        plotter.set_background("white")
        if scalars is not None:
            sc = np.pad(np.asarray(scalars, dtype=np.float32), 1)
            # carry each foreground voxel's value to its background neighbours so surface points sample it
            idx = ndimage.distance_transform_edt(vol <= 0, return_distances=False, return_indices=True)
            filled = sc[tuple(idx)]
            pts = np.clip(np.rint(surf.points).astype(int), 0, np.array(vol.shape) - 1)
            surf.point_data["value"] = filled[pts[:, 0], pts[:, 1], pts[:, 2]]
            plotter.add_mesh(surf, scalars="value", cmap=cmap, clim=clim, smooth_shading=True,
                             show_scalar_bar=False)
        else:
            plotter.add_mesh(surf, color=color, smooth_shading=True)
        plotter.camera_position = "iso"
        plotter.reset_camera(bounds=grid.bounds)  # frame the grid, not the surface: one scale for every volume
        plotter.camera.elevation = elevation
        plotter.camera.azimuth = azimuth
        plotter.camera.zoom(1.5)
        img = plotter.screenshot(return_img=True)
    except Exception as exc:  # no EGL/OSMesa
        raise RuntimeError(
            f"off-screen rendering failed ({exc}). Install an OpenGL stack for VTK (Debian: libegl1 libgl1, or "
            f"libosmesa6) or set COMPANION_NO_3D=1 to draw projections instead."
        ) from exc
    finally:
        plotter.close()
    return np.asarray(img)[..., :3]


def show_volume(ax, volume: np.ndarray, scalars: np.ndarray | None = None, *, title: str = "", size: int = 400,
                cmap: str = "viridis", clim: tuple[float, float] | None = None) -> str:
    """Draw a 3D surface render into a matplotlib axis; falls back to a MIP (and says so in the title) when
    ``COMPANION_NO_3D`` is set or off-screen rendering is unavailable. Returns the kind drawn: '3d' or 'mip'."""
    kind = "3d"
    img = None
    if not os.environ.get("COMPANION_NO_3D"):
        try:
            img = render_surface(volume, scalars, size=size, cmap=cmap, clim=clim)
        except RuntimeError as exc:
            warnings.warn(str(exc))
    if not np.asarray(volume).any():
        title = f"{title}\n(empty: no voxel predicted)" if title else "(empty volume)"
    if img is None:
        kind = "mip"
        img = mip(volume, axis=1).T
        ax.imshow(img, cmap="gray_r", origin="lower")
        title = f"{title} (MIP: no 3D renderer)"
    else:
        ax.imshow(img)
    ax.set_title(title, fontsize=9)
    ax.set_axis_off()
    return kind
