"""Training: the VAE variants of Tables 1-2 and the Moriya et al. (2018) baseline, one loop each.

Paper facts
-----------
- Eq. 10: ``L_total = L_ELBO + beta L_triplet`` with ``beta = 1e3`` and margin ``alpha = 0.2`` (Section 4);
  Adam.  Table 2's six configurations (Euclidean base / + triplet; hyperbolic base / + gyroconv / + triplet /
  + gyroconv & triplet).
- Nalepa et al. (2020): a 3-D convolutional autoencoder whose latent codes are clustered with k-means.
- Moriya et al. (2018): iterative feature learning and clustering (after Yang et al. 2016): cluster the current
  features, train the network to predict the clusters, repeat.

Our choices
-----------
- Every method gets the same budget: ``epochs x anchors_per_epoch`` anchors in batches of ``batch``, the same
  Adam learning rate and the same seeds; the triplet-free configurations draw the same anchors and skip the
  children.  The ELBO is computed on the anchor patches (``X`` in the paper's Figure 1), the triplet loss on the
  encoder means of (anchor, positive, negative).
- The plain autoencoder of Nalepa et al. is :class:`~.model.PatchVAE` with ``kind="ae"`` (same encoder and decoder,
  no sampling, no KL term, no triplet).
- Moriya et al.: each epoch encodes its anchor patches with the current encoder, clusters their deep features (the
  last convolution's output, 128 channels at the paper's widths; the method clusters deep features, and a 2-d
  bottleneck with a linear head collapsed to one cluster in our first laptop run) into ``pseudo_classes`` groups
  with scikit-learn's k-means, and then trains the encoder and a fresh linear head on those pseudo-labels with
  cross-entropy (one pass over the epoch's patches).  Segmentation clusters the same deep features.
- Under ``torchrun`` each rank trains on its share of the anchors and DDP averages the gradients
  (:mod:`companion.training`).
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..training import run_epoch, wrap_distributed
from .model import Encoder, ModelConfig, PatchVAE, triplet_loss
from .patches import SamplerConfig, TripletSampler, read_boxes

PAPER_BETA = 1e3  # Section 4
PAPER_MARGIN = 0.2


@dataclass(frozen=True)
class Method:
    name: str
    kind: str  # "euclidean", "hyperbolic", "ae" or "moriya"
    gyroconv: bool = False
    triplet: bool = False
    citation: str = ""

    @property
    def geometry(self) -> str:
        return "hyperbolic" if self.kind == "hyperbolic" else "euclidean"


OURS = "Hyperbolic + gyroconv & triplet (ours)"
ABLATIONS: dict[str, Method] = {m.name: m for m in [
    Method("Euclidean base", "euclidean"),
    Method("Euclidean + triplet", "euclidean", triplet=True),
    Method("Hyperbolic base", "hyperbolic"),
    Method("Hyperbolic + gyroconv", "hyperbolic", gyroconv=True),
    Method("Hyperbolic + triplet", "hyperbolic", triplet=True),
    Method(OURS, "hyperbolic", gyroconv=True, triplet=True),
]}
NALEPA = Method("Nalepa et al. (3D CAE + k-means)", "ae", citation="nalepa2020unsupervised")
MORIYA = Method("Moriya et al. (iterative features + k-means)", "moriya", citation="moriya2018unsupervised")
METHODS: dict[str, Method] = {**ABLATIONS, NALEPA.name: NALEPA, MORIYA.name: MORIYA}


@dataclass(frozen=True)
class TrainConfig:
    epochs: int
    anchors_per_epoch: int
    batch: int
    lr: float
    beta: float = PAPER_BETA
    margin: float = PAPER_MARGIN
    pseudo_classes: int = 8  # Moriya et al. only
    sampler: SamplerConfig = field(default_factory=SamplerConfig)


def model_config(method: Method, channels: tuple[int, ...], latent_dim: int, patch: int) -> ModelConfig:
    kind = "euclidean" if method.kind == "moriya" else method.kind
    return ModelConfig(kind=kind, gyroconv=method.gyroconv, latent_dim=latent_dim, channels=tuple(channels),
                       patch=patch)


class MoriyaNet(nn.Module):
    """The shared convolutional encoder; its deep features (the last convolution's channels, 128 at the paper's
    widths) are what is clustered, and a linear head over pseudo-classes (re-initialised every round) trains it."""

    def __init__(self, cfg: ModelConfig, pseudo_classes: int):
        super().__init__()
        self.encoder = Encoder(cfg.channels, cfg.latent_dim)
        self.head = nn.Linear(cfg.channels[-1], pseudo_classes)

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, None]:
        return self.encoder.features(x).flatten(1), None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.encode(x)[0])


def build(method: Method, mcfg: ModelConfig, tcfg: TrainConfig) -> nn.Module:
    return MoriyaNet(mcfg, tcfg.pseudo_classes) if method.kind == "moriya" else PatchVAE(mcfg)


def _vae_loss(model: nn.Module, vols: torch.Tensor, sampler: TripletSampler, method: Method, tcfg: TrainConfig,
              m: int) -> Callable:
    inner = model.module if hasattr(model, "module") else model
    n = vols.shape[0]

    def loss_of(idx: list[int], rng: np.random.Generator):
        b = sampler.sample([i % n for i in idx], rng)
        anchors = read_boxes(vols, b["index"], b["anchor_lo"], b["anchor_size"], m)
        out = model(anchors)
        elbo = (out["rec"] + out["kl"]).mean()
        stats = {"rec": float(out["rec"].detach().mean()), "kl": float(out["kl"].detach().mean())}
        loss = elbo
        if method.triplet:
            pos = read_boxes(vols, b["index"], b["pos_lo"], b["child_size"], m)
            neg = read_boxes(vols, b["index"], b["neg_lo"], b["child_size"], m)
            mu_pos, _ = inner.encode(pos)
            mu_neg, _ = inner.encode(neg)
            trip = triplet_loss(inner, out["mu"], mu_pos, mu_neg, tcfg.margin).mean()
            loss = loss + tcfg.beta * trip
            stats["triplet"] = float(trip.detach())
        stats["loss"] = float(loss.detach())
        return loss, stats

    return loss_of


def epoch_fn(method: Method, model: nn.Module, opt: torch.optim.Optimizer, volumes: list[np.ndarray],
             tcfg: TrainConfig, patch: int, seed: int, device: str = "cpu") -> Callable[[int], dict[str, float]]:
    """``epoch(e) -> stats`` for :func:`companion.checkpoints.train_or_load`."""
    vols = torch.as_tensor(np.stack(volumes)[:, None], dtype=torch.float32, device=device)
    sampler = TripletSampler(vols.shape[2:], tcfg.sampler)
    # the autoencoder never uses the encoder's scale head, Moriya et al. neither of the bottleneck heads
    net = wrap_distributed(model, find_unused=method.kind in ("ae", "moriya"))
    if method.kind != "moriya":
        loss_of = _vae_loss(net, vols, sampler, method, tcfg, patch)
        return lambda e: run_epoch(net, opt, tcfg.anchors_per_epoch, tcfg.batch, seed, e, loss_of)

    def moriya_epoch(e: int) -> dict[str, float]:
        from sklearn.cluster import KMeans
        from sklearn.exceptions import ConvergenceWarning

        rng = np.random.default_rng([seed, e, 11])
        idx = np.arange(tcfg.anchors_per_epoch) % vols.shape[0]
        b = sampler.sample(idx, rng)
        with torch.no_grad():
            patches = read_boxes(vols, b["index"], b["anchor_lo"], b["anchor_size"], patch)
            model.eval()
            feats = model.encode(patches)[0].cpu().numpy()
        with warnings.catch_warnings():  # identical features (e.g. empty background patches): fewer clusters is fine
            warnings.simplefilter("ignore", ConvergenceWarning)
            pseudo = KMeans(tcfg.pseudo_classes, n_init=2, random_state=seed + e).fit_predict(feats)
        pseudo = torch.as_tensor(pseudo, dtype=torch.long, device=device)
        torch.manual_seed(seed * 7 + e)
        model.head.reset_parameters()

        def loss_of(ix: list[int], _rng):
            loss = F.cross_entropy(net(patches[ix]), pseudo[ix])
            return loss, {"loss": float(loss.detach())}

        return run_epoch(net, opt, tcfg.anchors_per_epoch, tcfg.batch, seed, e, loss_of)

    return moriya_epoch


def encoder_of(model: nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
    """``patches -> posterior means`` of a trained model (eval mode, no gradients)."""
    model.eval()

    def enc(x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return model.encode(x)[0]

    return enc


def describe(method: Method) -> dict[str, Any]:
    out = {"latent": method.geometry, "gyroconv": method.gyroconv, "triplet": method.triplet, "kind": method.kind}
    if method.kind == "moriya":
        out["clustered"] = "deep features"
    return out
