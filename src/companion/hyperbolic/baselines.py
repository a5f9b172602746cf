"""Two baselines of Hsu, Gu et al. (2021), Tables 1 and 3: IIC on slices and a sparse 3D U-Net.

Paper facts
-----------
Hsu, Gu et al. (NeurIPS 2021), Section 4:

- Table 1 (synthetic 50^3 volumes, three hierarchy levels) and Table 3
  (BraTS 2019, FLAIR only, whole-tumour Dice) list, among others,
  "Ji et al. [2019]" (2D-to-3D unsupervised; Dice 0.589 / 0.291 / 0.150 on
  levels 1 / 2 / 3, 0.211 on BraTS) and "Çiçek et al. [2016]" (3D
  semi-supervised; 0.968 / 0.829 / 0.668, 0.760 on BraTS).
- "Ji et al. [2019] was implemented using the authors' original code and
  extrapolated to 3D by applying the method to each slice."  Which slicing
  axis, network, cluster counts and schedule were used is not stated.
- "Çiçek et al. [2016] was trained with 2% of the ground truth slices in each
  of the xy, yz, and xz planes."  Which slices, the network size, the loss
  and the schedule are not stated.
- Unsupervised outputs are scored with Dice after Hungarian matching of
  clusters to classes (see :mod:`companion.hyperbolic.matching`).

Ji, Henriques & Vedaldi (2019), "Invariant Information Clustering for
Unsupervised Image Classification and Segmentation", ICCV:

- IIC trains a network Φ with a softmax output over k clusters to maximise
  the mutual information I(z, z') between the cluster assignments of paired
  samples x and x' = g(x), g a random transformation.  The joint is
  ``P = 1/n sum_i Φ(x_i) Φ(x'_i)^T`` (k x k), symmetrised ``(P + P^T) / 2``,
  and ``I(P) = sum_cc' P_cc' ln(P_cc' / (P_c P_c'))`` with marginals
  ``P_c``, ``P_c'`` (Sec. 3.1, Eqs. 1-3).  I(P) is at most ln k, reached by a
  diagonal joint with uniform marginals (deterministic and balanced).
- Segmentation (Sec. 3.3): Φ is fully convolutional and assigns every pixel
  u a distribution Φ_u(x).  Pixel u of x is paired with pixel u + t of the
  transformed prediction brought back into x's frame, ``[g^{-1} Φ(g x)]``,
  for every displacement t in a small window T (local spatial invariance);
  the objective averages I(P_t) over t in T (Eq. 5), and the sums over pixels
  are computed as a convolution.
- An auxiliary over-clustering head (more clusters than classes) is trained
  alongside the main head, alternating between them.
- The authors' code (github.com/xu-ji/IIC, ``IID_segmentation_loss`` and its
  "uncollapsed" variant, which the segmentation commands select) clamps
  P and its marginals from below at the float64 machine epsilon before the
  logarithm and weights the marginal terms by a coefficient lambda (1.0 or
  1.5); its segmentation runs use Adam with lr 1e-4 (COCO-Stuff) down to
  1e-6 (Potsdam), half-window ``half_T_side_dense`` of 5 or 10 pixels at
  128-200 pixel inputs, and photometric jitter (brightness, contrast,
  saturation, hue 0.1) plus flips as transformations.

Çiçek, Abdulkadir, Lienkamp, Brox & Ronneberger (2016), "3D U-Net: Learning
Dense Volumetric Segmentation from Sparse Annotation", MICCAI:

- A 3D U-Net (3x3x3 convolutions, 2x2x2 pooling, batch normalisation) is
  trained from a few annotated orthogonal 2D slices per volume with a
  weighted softmax cross-entropy in which unlabelled voxels have weight 0,
  so only annotated voxels contribute to the loss.

Our choices
-----------
IIC (:func:`train_iic`, :func:`segment_iic`):

- Slices: axial (first axis) 2D slices, drawn uniformly at random from all
  training volumes; segmentation runs the net on every axial slice and
  stacks the argmax labels, so there is no 3D consistency (as in Hsu et al.).
- Network (:class:`IICNet`): a 3x3 conv at full resolution, then a stride-2
  3x3 conv and a dilated (2) 3x3 conv at half resolution, bilinearly
  upsampled and added to the full-resolution features (IIC's own
  segmentation nets also downsample and upsample bilinearly); batch norm,
  ReLU, reflect padding (zero padding would tell the net where the image
  border is, a cue the clusters could follow), ``channels`` features,
  channels-last memory format (faster on CPU).  One 1x1-conv softmax head
  per k in ``ks``, trained jointly by summing the heads' losses with equal
  weights (lambda = 1), instead of IIC's alternation between a main and an
  over-clustering head; the finer heads play the over-clustering role.
- Pairs: x is the slice, g(x) a photometric jitter (gain U(0.8, 1.2), offset
  U(-0.1, 0.1), gamma exp(U(-0.3, 0.3)) on the clipped intensities, Gaussian
  noise sd 0.03) and, with probability 1/2 per slice, a left-right flip that
  is undone on the prediction (g^{-1}).  No crops, rotations or Sobel
  filtering.
- Loss: the uncollapsed form of Eq. 5, mean over displacements t in the
  (2r+1)^2 window of -I(P_t), each P_t normalised and symmetrised.  The
  arguments of the logarithms are clamped to ``EPS`` = float32 machine
  epsilon (our dtype; the authors clamp at float64 epsilon), but unlike the
  authors' code the factor P in front is not, so empty cells contribute
  exactly 0 (0 log 0 = 0) and an aligned, balanced one-hot joint gives
  exactly ln k.  Default radius r = 1 pixel (50-pixel slices are small;
  IIC used 5-10 at 128-200 pixels).  Out-of-image neighbours are
  zero-padded and simply contribute no mass.
- Optimiser: Adam, lr 1e-3 (the PyTorch/Adam default; IIC's 1e-4 is too slow
  for a few hundred steps), batch 16 slices.

Sparse 3D U-Net (:func:`train_sparse_unet`, :func:`segment_unet`):

- Network: MONAI ``UNet`` (spatial_dims 3, channels (8, 16, 32), strides
  (2, 2), one residual unit per block, MONAI's default instance norm), far
  smaller than Çiçek et al.'s so it trains on 2 CPU cores.
- Annotation: :func:`sparse_slice_mask` -- per axis ``max(1, round(fraction *
  n))`` slices, chosen at random without replacement (seeded; ``how="even"``
  gives evenly spaced slice centres instead); the mask is their union over
  the three axes.  Volume i of the training set gets seed ``seed + i``.
- Loss: cross-entropy averaged over annotated voxels only (the weight-0
  rule of Çiçek et al. without their class re-weighting).
- Volumes are zero-padded at the far end of each axis to a multiple of 4
  (two stride-2 levels) and predictions cropped back; padding is never
  annotated.  Batch 2 whole volumes drawn at random, Adam lr 1e-3.
- Augmentation: random flips and circular shifts of 0-3 voxels along each
  axis (image, labels and mask alike) -- a cheap stand-in for Çiçek et al.'s
  rotations, scalings, grey-value changes and elastic deformations.  Without
  the shifts the strided net fits the one annotated slice per axis at its
  position modulo 4 and predicts stripes elsewhere (foreground Dice 0.5-0.6 on
  the toy cubes of the tests, 0.9-0.99 with them).

Both trainers are deterministic for a given seed on one machine (seeded
``torch.Generator`` for data and ``torch.manual_seed`` for initialisation).
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

EPS = float(torch.finfo(torch.float32).eps)


# --------------------------------------------------------------------------- IIC
def mutual_information(P: torch.Tensor) -> torch.Tensor:
    """I(P) = sum P log(P / (P_i P_j)) of normalised (..., k, k) joints; log arguments clamped to EPS."""
    pi = P.sum(-1, keepdim=True)
    pj = P.sum(-2, keepdim=True)
    logs = P.clamp_min(EPS).log() - pi.clamp_min(EPS).log() - pj.clamp_min(EPS).log()
    return (P * logs).sum((-2, -1))


def iic_loss(p: torch.Tensor, q: torch.Tensor, radius: int = 1) -> torch.Tensor:
    """Negative IIC mutual information between per-pixel cluster maps ``p`` and ``q``.

    ``p``, ``q``: (B, k, H, W) softmax maps, ``q`` already in ``p``'s frame
    (g^{-1} applied).  For every displacement t with |t_y|, |t_x| <= radius the
    joint ``P_t[i, j] = sum_{b,u} p[b, i, u] q[b, j, u + t]`` is normalised and
    symmetrised; the loss is ``-mean_t I(P_t)`` (Ji et al. 2019, Eq. 5).
    """
    if p.shape != q.shape or p.ndim != 4:
        raise ValueError(f"p and q must be equal (B, k, H, W) tensors, got {tuple(p.shape)}, {tuple(q.shape)}")
    if radius < 0:
        raise ValueError("radius must be >= 0")
    # conv2d with the batch as channels sums over b and u: out[i, j, t] = sum p_i(u + t) q_j(u)
    joint = F.conv2d(p.transpose(0, 1), q.transpose(0, 1), padding=radius)  # (k, k, T, T)
    joint = joint.permute(2, 3, 0, 1)  # (T, T, k, k), P_t with t -> -t; the mean over t is unaffected
    joint = joint / joint.sum((-2, -1), keepdim=True)
    joint = (joint + joint.transpose(-2, -1)) / 2
    return -mutual_information(joint).mean()


class IICNet(nn.Module):
    """Small fully convolutional 2D net with one softmax head per cluster count.

    conv 3x3 (full resolution) -> conv 3x3 stride 2 -> conv 3x3 dilation 2
    (half resolution) -> bilinear upsampling, added to the full-resolution
    features -> one 1x1-conv softmax head per k.  Reflect padding, so the
    net sees no image border (zero padding lets IIC cluster by position).
    """

    def __init__(self, ks: Sequence[int] = (2, 4, 8), channels: int = 32):
        super().__init__()
        self.ks = tuple(int(k) for k in ks)
        if len(set(self.ks)) != len(self.ks) or min(self.ks) < 2:
            raise ValueError(f"ks must be distinct cluster counts >= 2, got {ks}")

        def block(c_in, stride=1, dil=1):
            return nn.Sequential(
                nn.Conv2d(c_in, channels, 3, stride=stride, padding=dil, dilation=dil, bias=False,
                          padding_mode="reflect"),
                nn.BatchNorm2d(channels), nn.ReLU(inplace=True))

        self.full = block(1)
        self.down = nn.Sequential(block(channels, stride=2), block(channels, dil=2))
        self.heads = nn.ModuleDict({str(k): nn.Conv2d(channels, k, 1) for k in self.ks})

    def forward(self, x: torch.Tensor) -> dict[int, torch.Tensor]:
        """(B, 1, H, W) -> {k: (B, k, H, W) softmax maps}."""
        h = self.full(x.contiguous(memory_format=torch.channels_last))
        h = h + F.interpolate(self.down(h), size=h.shape[-2:], mode="bilinear", align_corners=False)
        return {k: self.heads[str(k)](h).softmax(1) for k in self.ks}


def _jitter(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Photometric g: gain, offset, gamma, Gaussian noise (per slice)."""
    b = x.shape[0]

    def u(lo, hi):
        return lo + (hi - lo) * torch.rand(b, 1, 1, 1, generator=gen)

    gamma = torch.exp(u(-0.3, 0.3))
    y = x.clamp(0, 1) ** gamma
    y = y * u(0.8, 1.2) + u(-0.1, 0.1)
    return y + 0.03 * torch.randn(x.shape, generator=gen)


def _as_volumes(volumes) -> list[np.ndarray]:
    vols = [np.asarray(v, dtype=np.float32) for v in volumes]
    if not vols or any(v.ndim != 3 for v in vols):
        raise ValueError("volumes must be a non-empty list of (D, H, W) arrays")
    return vols


def train_iic(volumes: list[np.ndarray], ks=(2, 4, 8), steps: int = 200, batch: int = 16,
              lr: float = 1e-3, seed: int = 0, channels: int = 32,
              radius: int = 1) -> tuple[nn.Module, list[float]]:
    """Train IIC on random axial slices of ``volumes``; returns (model, loss per step).

    The loss of a step is the sum over heads of :func:`iic_loss`.  All slices of
    one step must share (H, W); volumes of different in-plane size are sampled
    one volume per step.
    """
    vols = _as_volumes(volumes)
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    model = IICNet(ks, channels).to(memory_format=torch.channels_last)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    same_plane = len({v.shape[1:] for v in vols}) == 1
    tensors = [torch.from_numpy(v) for v in vols]
    history = []
    model.train()
    for _ in range(steps):
        if same_plane:
            vi = torch.randint(len(vols), (batch,), generator=gen).tolist()
        else:
            vi = [int(torch.randint(len(vols), (1,), generator=gen))] * batch
        x = torch.stack([tensors[i][int(torch.randint(tensors[i].shape[0], (1,), generator=gen))]
                         for i in vi])[:, None]
        gx = _jitter(x, gen)
        flip = torch.rand(batch, generator=gen) < 0.5
        gx = torch.where(flip[:, None, None, None], gx.flip(-1), gx)
        out = model(torch.cat([x, gx]))
        loss = 0.0
        for k in model.ks:
            p, q = out[k][:batch], out[k][batch:]
            q = torch.where(flip[:, None, None, None], q.flip(-1), q)  # g^{-1}
            loss = loss + iic_loss(p, q, radius)
        opt.zero_grad()
        loss.backward()
        opt.step()
        history.append(float(loss.detach()))
    model.eval()
    return model, history


@torch.no_grad()
def segment_iic(model: nn.Module, volume: np.ndarray, k: int) -> np.ndarray:
    """Argmax of head ``k`` on every axial slice of ``volume``, stacked to (D, H, W) int labels."""
    vol = _as_volumes([volume])[0]
    if k not in model.ks:
        raise ValueError(f"model has no head with k={k}; heads: {model.ks}")
    was_training = model.training
    model.eval()
    out = model(torch.from_numpy(vol)[:, None])[k].argmax(1)
    model.train(was_training)
    return out.numpy().astype(np.int64)


# ------------------------------------------------------------------ sparse 3D U-Net
def sparse_slice_mask(shape: Sequence[int], fraction: float = 0.02, seed: int = 0,
                      how: str = "random") -> np.ndarray:
    """Boolean mask: union of ``max(1, round(fraction * n_a))`` full slices along each axis a.

    ``how="random"``: slices drawn without replacement with ``numpy.random.default_rng(seed)``;
    ``how="even"``: slice i of m at ``floor((i + 0.5) * n_a / m)``.
    """
    shape = tuple(int(s) for s in shape)
    if len(shape) != 3 or min(shape) < 1:
        raise ValueError(f"shape must be 3 positive sizes, got {shape}")
    if not 0 < fraction <= 1:
        raise ValueError("fraction must be in (0, 1]")
    if how not in ("random", "even"):
        raise ValueError("how must be 'random' or 'even'")
    rng = np.random.default_rng(seed)
    mask = np.zeros(shape, dtype=bool)
    for axis, n in enumerate(shape):
        m = max(1, int(round(fraction * n)))
        if how == "random":
            idx = np.sort(rng.choice(n, size=m, replace=False))
        else:
            idx = np.floor((np.arange(m) + 0.5) * n / m).astype(int)
        sl = [slice(None)] * 3
        sl[axis] = idx
        mask[tuple(sl)] = True
    return mask


def masked_cross_entropy(logits: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Cross-entropy averaged over voxels where ``mask`` is true (0 if none).

    ``logits`` (B, C, ...), ``target`` (B, ...) integer, ``mask`` (B, ...) bool.
    """
    ce = F.cross_entropy(logits, target.long(), reduction="none")
    m = mask.to(ce.dtype)
    return (ce * m).sum() / m.sum().clamp_min(1.0)


def _pad4(x: torch.Tensor) -> torch.Tensor:
    """Zero-pad the last three axes at their far end to multiples of 4."""
    pads = []
    for n in reversed(x.shape[-3:]):
        pads += [0, (-n) % 4]
    return F.pad(x, pads)


def _augment(x: torch.Tensor, y: torch.Tensor, m: torch.Tensor, gen: torch.Generator):
    """Same random flips and circular shifts (0-3 voxels) per axis for image, labels and mask.

    Shifts cover the 4 phases of the two stride-2 levels, so the few annotated
    slices are seen at every phase (without them the net overfits them).
    """
    xs, ys, ms = [], [], []
    for b in range(x.shape[0]):
        xb, yb, mb = x[b], y[b], m[b]
        for ax in range(3):
            shift = int(torch.randint(4, (1,), generator=gen))
            flip = bool(torch.rand(1, generator=gen) < 0.5)
            xb, yb, mb = (t.roll(shift, dims=ax - 3) for t in (xb, yb, mb))
            if flip:
                xb, yb, mb = (t.flip(ax - 3) for t in (xb, yb, mb))
        xs.append(xb), ys.append(yb), ms.append(mb)
    return torch.stack(xs), torch.stack(ys), torch.stack(ms)


def build_unet(n_classes: int, channels: Sequence[int]) -> nn.Module:
    from monai.networks.nets import UNet

    channels = tuple(int(c) for c in channels)
    return UNet(spatial_dims=3, in_channels=1, out_channels=n_classes, channels=channels,
                strides=(2,) * (len(channels) - 1), num_res_units=1)


def train_sparse_unet(volumes: list[np.ndarray], labels: list[np.ndarray], n_classes: int,
                      steps: int = 200, lr: float = 1e-3, fraction: float = 0.02, seed: int = 0,
                      channels=(8, 16, 32), batch: int = 2) -> tuple[nn.Module, list[float]]:
    """Train a MONAI 3D U-Net on ``fraction`` of the slices per axis of each label map.

    Returns (model, masked cross-entropy per step).  Volumes must share one shape
    (batches stack whole volumes).  ``channels`` of length L needs a padding to a
    multiple of 2^(L-1); only the default L = 3 (multiple of 4) is supported.
    """
    vols = _as_volumes(volumes)
    labs = [np.asarray(lab) for lab in labels]
    if len(labs) != len(vols) or any(lab.shape != v.shape for lab, v in zip(labs, vols)):
        raise ValueError("labels must match volumes one to one in shape")
    if len({v.shape for v in vols}) != 1:
        raise ValueError("all volumes must have the same shape")
    if len(tuple(channels)) != 3:
        raise ValueError("channels must have 3 entries (two stride-2 levels)")
    if any(lab.min() < 0 or lab.max() >= n_classes for lab in labs):
        raise ValueError(f"labels must lie in [0, {n_classes})")
    x_all = _pad4(torch.from_numpy(np.stack(vols))[:, None])
    y_all = _pad4(torch.from_numpy(np.stack(labs).astype(np.int64)))
    m_all = _pad4(torch.from_numpy(np.stack([sparse_slice_mask(v.shape, fraction, seed + i)
                                             for i, v in enumerate(vols)])))
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    model = build_unet(n_classes, channels)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    history = []
    model.train()
    for _ in range(steps):
        idx = torch.randint(len(vols), (min(batch, len(vols)),), generator=gen)
        x, y, m = _augment(x_all[idx], y_all[idx], m_all[idx], gen)
        loss = masked_cross_entropy(model(x), y, m)
        opt.zero_grad()
        loss.backward()
        opt.step()
        history.append(float(loss.detach()))
    model.eval()
    return model, history


@torch.no_grad()
def segment_unet(model: nn.Module, volume: np.ndarray) -> np.ndarray:
    """Argmax labels of ``model`` on ``volume`` (padded to multiples of 4, cropped back)."""
    vol = _as_volumes([volume])[0]
    was_training = model.training
    model.eval()
    logits = model(_pad4(torch.from_numpy(vol)[None, None]))
    model.train(was_training)
    d, h, w = vol.shape
    return logits[0, :, :d, :h, :w].argmax(0).numpy().astype(np.int64)
