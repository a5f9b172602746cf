"""Hyperbolic building blocks for chapter 3 (Hsu, Gu et al., NeurIPS 2021).

All pieces work on geoopt's ``PoincareBall`` (curvature ``-c``):

- :mod:`companion.hyperbolic.wrapped_normal` -- reparametrised samples and
  log-density of the wrapped normal distribution (the paper's Eq. 4).
- :mod:`companion.hyperbolic.gyroplane` -- the gyroplane layer and the
  gyroplane 3-D convolution (Eqs. 5-7).
- :mod:`companion.hyperbolic.kmeans` -- hyperbolic k-means with Fréchet-mean
  centroids (Section 3.3).
- :mod:`companion.hyperbolic.matching` -- Hungarian matching of cluster labels
  to ground-truth classes, then Dice per class.
"""
