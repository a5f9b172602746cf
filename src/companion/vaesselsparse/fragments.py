"""Where the sparse decoder's extra connected components come from.

A reconstruction has more components than its reference (a β0 error) for two different reasons:

* a **spurious fragment**: a component that shares no voxel with the reference (voxels switched on away from the
  vessels);
* a **broken vessel**: a reference vessel reconstructed in several pieces, each overlapping the reference (voxels
  missing along a thin vessel).

The decoder (``companion.vaesselsparse.model.SparseDecoder``) creates voxels level by level: every kept voxel at
1/8 resolution gets its 8 children at 1/4, a pruning head keeps those with logit > 0, again at 1/2, and the final
convolution decides the full-resolution voxels.  A spurious fragment therefore has a *birth level*: the coarsest
level at which all of its ancestors lie outside the reference (coarsened to that level), i.e. the pruning decision
that kept a voxel where there is no vessel.  If its ancestors at 1/2 resolution are vessel voxels, the fragment was
born at the final output: children of a true vessel voxel, switched on but disconnected from the rest.

A broken vessel is the opposite error: reference voxels the reconstruction misses.  Each missed voxel was lost at
one level: its 1/4-resolution ancestor was pruned by the first head, or its 1/2-resolution ancestor by the second,
or it was created at full resolution and the final layer switched it off.
"""
from __future__ import annotations

from typing import Any

import cc3d
import numpy as np
import pandas as pd
import torch

from ..sparse import from_masks
from .model import SparseVAE

ORIGINS = ("1/4-resolution pruning head", "1/2-resolution pruning head", "full-resolution output")
LOSSES = ("missed: pruned at 1/4", "missed: pruned at 1/2", "missed: off at full resolution")


def _coarse_set(coords: np.ndarray, stride: int) -> set[tuple[int, int, int]]:
    return set(map(tuple, np.unique(coords // stride, axis=0)))


@torch.no_grad()
def decode_levels(model: SparseVAE, volume: Any, device: str = "cpu") -> tuple[np.ndarray, list[dict[str, Any]]]:
    """Reconstruct one volume (posterior mean, no teacher forcing) and return the binary map and, per pruning level,
    its stride, the voxels created there and the voxels the head kept (coordinates without the batch column, in
    full-resolution units: multiples of the stride)."""
    was = model.training
    model.eval()
    try:
        out = model(from_masks([volume], device))
    finally:
        model.train(was)
    logits = out["logits"]
    keep = logits.feats[:, 0] > 0
    pred = np.zeros(np.shape(volume), bool)
    c = logits.coords[keep, 1:].cpu().numpy()
    pred[c[:, 0], c[:, 1], c[:, 2]] = True
    levels = [{"stride": int(stride), "created": coords[:, 1:].cpu().numpy(),
               "kept": coords[lg > 0, 1:].cpu().numpy()} for coords, lg, stride in out["levels"]]
    return pred, levels


def fragment_origins(model: SparseVAE, volumes: list[Any], device: str = "cpu") -> pd.DataFrame:
    """One row per volume: components of reference and reconstruction, how many reconstructed components overlap the
    reference, how many spurious fragments were born at each level (see the module doc), their voxels, where the
    missed reference voxels were lost, and, per pruning level, the fraction of kept voxels that lie outside the
    reference coarsened to that level."""
    rows = []
    for i, vol in enumerate(volumes):
        ref = np.asarray(vol, bool)
        pred, levels = decode_levels(model, vol, device)
        lab, n = cc3d.connected_components(pred.astype(np.uint8), connectivity=26, return_N=True)
        ref_n = int(cc3d.connected_components(ref.astype(np.uint8), connectivity=26, return_N=True)[1])
        ref_coords = np.argwhere(ref)
        truth = {s: _coarse_set(ref_coords, s) for s in (4, 2)}
        row: dict[str, Any] = {"volume": i, "reference components": ref_n, "reconstructed components": int(n),
                               "overlapping the reference": 0, "spurious fragments": 0, "spurious voxels": 0,
                               **{o: 0 for o in ORIGINS}}
        for k in range(1, n + 1):
            comp = np.argwhere(lab == k)
            if ref[tuple(comp.T)].any():
                row["overlapping the reference"] += 1
                continue
            row["spurious fragments"] += 1
            row["spurious voxels"] += len(comp)
            if not (_coarse_set(comp, 4) & truth[4]):
                row[ORIGINS[0]] += 1
            elif not (_coarse_set(comp, 2) & truth[2]):
                row[ORIGINS[1]] += 1
            else:
                row[ORIGINS[2]] += 1
        missed = np.argwhere(ref & ~pred)
        kept_sets = {lv["stride"]: set(map(tuple, lv["kept"] // lv["stride"])) for lv in levels}
        for name in LOSSES:
            row[name] = 0
        for v in map(np.asarray, missed):
            if tuple(v // 4) not in kept_sets.get(4, set()):
                row[LOSSES[0]] += 1
            elif tuple(v // 2) not in kept_sets.get(2, set()):
                row[LOSSES[1]] += 1
            else:
                row[LOSSES[2]] += 1
        for lv in levels:
            kept = lv["kept"] // lv["stride"]  # coordinates at stride s are multiples of s
            outside = sum(1 for c in map(tuple, kept) if c not in truth[lv["stride"]])
            row[f"kept outside vessels at 1/{lv['stride']} (%)"] = 100 * outside / max(len(kept), 1)
        rows.append(row)
    return pd.DataFrame(rows)
