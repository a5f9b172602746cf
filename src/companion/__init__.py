"""Shared code of the companion book for 3D vessel representation learning.

Modules: ``scales`` (ci / laptop / paper presets), ``chapter`` (notebook set-up), ``data`` (manifests, downloads,
offline stand-ins), ``metrics``, ``results`` (tables, figures, scoreboard, provenance), ``checkpoints``,
``render``, ``build`` (the book), one module per chapter (``vessel_data``, ...).
"""
__version__ = "0.1.0"
