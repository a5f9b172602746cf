"""VpbSD (vessel-pattern-based semi-supervised distillation): the models and losses of chapter 2.

:mod:`.codebook` the vessel-pattern codebook (Eqs. 8-9) · :mod:`.teacher` SwinUNETR + codebook ·
:mod:`.student` the light 3D UNet returning Z_stu · :mod:`.losses` Eqs. 4-7 and 10-12, the beta ramp ·
:mod:`.bench` parameters, FLOPs and ms per block (Table 2).
"""
