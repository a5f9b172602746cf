"""SparseVM (Lewis et al. 2020, "Fast learning-based registration of sparse 3D clinical images"): chapter 4.

:mod:`.losses` SMSE (Eq. 5), SLCC (Eqs. 6-8), the unmasked LCC (Eq. 3) and the smoothness penalty (Eq. 4) ·
:mod:`.acquisition` simulated clinical sparse acquisition (every k-th axial slice, linear upsampling, masks) ·
:mod:`.data` the atlas and the sparse subjects (offline stand-in from MNI152; neurite-OASIS) ·
:mod:`.model` VoxelMorph's network (the ``voxelmorph`` package) · :mod:`.train` the three learned methods ·
:mod:`.ants` the ANTs SyN baseline (antspyx) · :mod:`.chapter` one function per table or figure ·
``python -m companion.sparsevm`` trains under torchrun.
"""
