"""SparseVM (Lewis et al. 2020, "Fast learning-based registration of sparse 3D clinical images"): chapter 4's foundation.

:mod:`.losses` SMSE (Eq. 5), SLCC (Eqs. 6-8), the unmasked LCC (Eq. 3) and the smoothness penalty (Eq. 4) ·
:mod:`.acquisition` simulated clinical sparse acquisition (every k-th axial slice, linear upsampling, masks).
"""
