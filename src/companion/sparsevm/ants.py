"""ANTs SyN baseline of SparseVM's Table 1 (antspyx), atlas-to-subject, with controlled ITK threads.

Paper facts
-----------
* Section 3.2: the baselines include the Advanced Normalization Tools (ANTs, Avants et al. 2011), "used as a
  baseline in the original VoxelMorph and PBR papers. We use the cross correlation loss for ANTS." Parameters are
  "the optimal parameters given in the original publications" (not restated in this paper).
* Section 3: atlas-based registration -- the (full-resolution, isotropic) atlas is registered *to each subject
  scan*; the subject is a sparse scan (about 15% of the slices) linearly interpolated to the atlas resolution,
  affinely pre-aligned to the atlas and padded to 160x192x160. Section 3.3: the atlas ventricle labels are warped
  to the subject and Dice is computed in subject space on the acquired slices.
* Table 1, "ANTs (optimized)": Dice 0.696 (SD 0.070), median 0.720 (MAD 0.050); 9059 (2023) CPU seconds per
  subject, no GPU version. Section 4.1: ANTs and PBR "take on the order of two hours on a CPU", VoxelMorph and
  SparseVM under a minute on a single-threaded CPU. The number of CPU threads used for ANTs is not stated.

Our choices
-----------
* :func:`register` maps ``moving`` (the atlas) onto ``fixed`` (the subject) with :func:`ants.registration`; the
  atlas image comes back as ANTs' ``warpedmovout`` (linear), the atlas labels through :func:`ants.apply_transforms`
  with the same forward transforms and ``genericLabel`` interpolation (labels in 0..255, returned as uint8).
  Arrays are ``(D, H, W)``; ``spacing_mm`` (one number, or three in array-axis order) is set on both ANTsImages,
  origin 0 and identity direction on both, so the two grids coincide.
* :data:`SETTINGS`: ``"syncc"`` is antspyx's ``'SyNCC'`` preset -- our stand-in for the paper's CC-based ANTs. It
  starts with rigid and affine stages (Mattes MI) before SyN with CC (radius 4, i.e. a 9^3 window;
  2100x1200x1200x20 iterations at shrink factors 4x3x2x1), although the paper's subjects were already affinely
  aligned. ``"syncc-fast"`` is deformable-only (``'SyNOnly'``: identity initial transform, no linear stages) with
  CC radius 2 (5^3 window) and 40x20 iterations at shrink factors 4x2 (none at full resolution), cheap enough
  for every test subject at ci/laptop scale. ``"syn"`` is antspyx's default (affine + SyN, Mattes MI): not CC,
  shown for reference only. Neither is the paper's tuned "ANTs (optimized)" setting.
* Threads: ITK fixes its thread count once per process, from ``ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS`` at its
  first use, and antspyx offers no way to change it later: setting the variable afterwards, or calling
  ``ants.config.set_ants_deterministic`` (which sets that variable and a seed; its ``_deterministic`` flag is
  copied into ``ants.registration`` at import, so it has no other effect), changes nothing once ITK has run. So
  every registration runs in a worker *subprocess* started with that variable set; one worker per thread count
  stays alive (imports paid once, about 2 s) and is reused, so 1 and 2 threads can be mixed in any order within
  one Python session; calls are serialised. :func:`shutdown_workers` ends them (also at exit). ``seconds`` is
  measured inside the worker (registration + label warping; no start-up, no data transfer); ``cpu_seconds`` is
  the worker's CPU time (all threads) over the same span.
* Seeds: antspyx 0.6.3 silently ignores a ``random_seed=`` keyword; the seed reaches ``antsRegistration
  --random-seed`` only through ``ants.config._random_seed``, and ANTs treats 0 as "seed from the clock", so we
  pass ``seed + 1``. With one thread and a fixed seed, results are bit-identical run to run (all three settings,
  measured). With two threads the Mattes-MI stages are not (``"syn"``: max abs difference 0.10-0.28 of the [0, 1]
  image, ~800-1600 labels differ; ``"syncc"``: about 0.01 and ~40 labels); the CC-only ``"syncc-fast"`` was
  identical in our runs.
* ANTs' transform files go to a temporary directory inside the worker, deleted after each pair.
* Measured with one thread (2-core machine shared with other jobs: CPU seconds are the load-free figure, wall
  was up to 1.5x more; 2 threads gave no speed-up there for lack of a free core). MNI152 T1 at 4 mm (48^3) and
  3 mm (48x64x48), moving = fixed under a smooth random displacement of up to 3 voxels; Dice of a grey
  matter + CSF label, before -> after:

  ============  ====================  ====================
  setting       4 mm (48^3)           3 mm (48x64x48)
  ============  ====================  ====================
  syncc-fast    3.6 s, .44 -> .69     4.8 s, .61 -> .79
  syn           1.0 s, .44 -> .61     1.4-1.8 s, .61 -> .80
  syncc         212 s, .44 -> .78     380 s, .61 -> .81
  ============  ====================  ====================

  ``"syncc-fast"`` candidates at 3 mm (CPU s, Dice after): CC r2 20x10x0 2.7 s .77; r2 40x20x0 4.8 s .79;
  r3 40x20x0 8.1 s .76; r4 40x20x0 11.9 s .73; r2 100x70x0 15.3 s .79; r2 40x20x5 13.9 s .82; r2 40x20
  (shrink 2x1) 42 s .84 -- full-resolution CC iterations dominate the cost.
"""

from __future__ import annotations

import atexit
import os
import pickle
import subprocess
import sys
import threading
import traceback
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = ["AntsSetting", "AntsResult", "SETTINGS", "LABEL_INTERPOLATOR", "register", "shutdown_workers"]

LABEL_INTERPOLATOR = "genericLabel"
THREADS_ENV = "ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS"
# keywords register() sets itself; "random_seed" is swallowed (ignored) by ants.registration's **kwargs
_RESERVED = {"fixed", "moving", "type_of_transform", "outprefix", "verbose", "random_seed"}


@dataclass(frozen=True)
class AntsSetting:
    """One ANTs configuration: the ``ants.registration`` transform type plus extra keyword arguments."""

    name: str  # shown in tables
    type_of_transform: str
    options: dict  # extra ants.registration kwargs (syn_metric, syn_sampling, reg_iterations, ...)
    note: str  # one line: what it is, how it differs from the paper's setting


SETTINGS: dict[str, AntsSetting] = {
    "syncc": AntsSetting(
        name="SyNCC (antspyx preset)",
        type_of_transform="SyNCC",
        options={},
        note="rigid + affine (Mattes MI) then SyN with CC radius 4, 2100x1200x1200x20 iterations; the paper's "
        "'cross correlation loss for ANTs', but its tuned parameters are unknown and its subjects were pre-aligned",
    ),
    "syncc-fast": AntsSetting(
        name="SyN-only CC r2 (fast)",
        type_of_transform="SyNOnly",
        options={"syn_metric": "CC", "syn_sampling": 2, "reg_iterations": (40, 20, 0)},
        note="deformable SyN only (no linear stages), CC radius 2, 40x20x0 iterations at shrink 4x2x1: a cheap "
        "CC-based ANTs for every test subject, far fewer iterations than the paper's optimised ANTs",
    ),
    "syn": AntsSetting(
        name="SyN (antspyx default, MI)",
        type_of_transform="SyN",
        options={},
        note="affine then SyN with Mattes mutual information, 40x20x0 iterations: not the paper's CC metric",
    ),
}


@dataclass(frozen=True)
class AntsResult:
    """Atlas (moving) warped onto the subject (fixed) grid."""

    warped_image: np.ndarray  # atlas image warped to the subject, float32, subject grid
    warped_labels: np.ndarray  # atlas labels warped with the same transforms (genericLabel), uint8
    seconds: float  # wall time of ants.registration + apply_transforms (per pair), inside the worker
    threads: int  # ITK threads of the worker that ran it
    cpu_seconds: float = float("nan")  # worker CPU time (all threads) over the same span


# ---------------------------------------------------------------------------------------------- validation
def _check_volume(name: str, x, shape=None) -> np.ndarray:
    if not isinstance(x, np.ndarray):
        raise ValueError(f"{name} must be a numpy array of shape (D, H, W), got {type(x).__name__}")
    if x.ndim != 3:
        raise ValueError(f"{name} must be 3-D (D, H, W), got shape {x.shape}")
    if shape is not None and x.shape != shape:
        raise ValueError(f"shape mismatch: fixed has shape {shape} but {name} has shape {x.shape}")
    if min(x.shape) < 4:
        raise ValueError(f"{name} is too small for ANTs' image pyramid: shape {x.shape} (need >= 4 per axis)")
    return x


def _check_image(name: str, x, shape=None) -> np.ndarray:
    x = _check_volume(name, x, shape)
    if x.dtype == bool or not (np.issubdtype(x.dtype, np.integer) or np.issubdtype(x.dtype, np.floating)):
        raise ValueError(f"{name} must hold real numbers, got dtype {x.dtype}")
    x = np.ascontiguousarray(x, dtype=np.float32)
    if not np.isfinite(x).all():
        raise ValueError(f"{name} has {int((~np.isfinite(x)).sum())} non-finite values (NaN/inf): replace them first")
    return x


def _check_labels(x, shape) -> np.ndarray:
    x = _check_volume("moving_labels", x, shape)
    if x.dtype == bool:
        return x.astype(np.uint8)
    if not (np.issubdtype(x.dtype, np.integer) or np.issubdtype(x.dtype, np.floating)):
        raise ValueError(f"moving_labels must be integer label values, got dtype {x.dtype}")
    if np.issubdtype(x.dtype, np.floating) and not (np.isfinite(x).all() and (x == np.round(x)).all()):
        raise ValueError("moving_labels must be integer-valued (a label map), got non-integer or non-finite values")
    lo, hi = (x.min(), x.max()) if x.size else (0, 0)
    if lo < 0 or hi > 255:
        raise ValueError(f"moving_labels must lie in 0..255 (returned as uint8), got values in [{lo}, {hi}]")
    return x.astype(np.uint8)


def _check_spacing(spacing_mm) -> tuple[float, float, float]:
    try:
        sp = None if isinstance(spacing_mm, (str, bytes, bool)) else np.atleast_1d(np.asarray(spacing_mm, dtype=float))
    except (TypeError, ValueError):
        sp = None
    if sp is None or sp.ndim != 1 or sp.size not in (1, 3) or not np.isfinite(sp).all() or (sp <= 0).any():
        raise ValueError(f"spacing_mm must be a positive number (or three, one per axis), got {spacing_mm!r}")
    return tuple(float(s) for s in np.broadcast_to(sp, (3,)))


def _check_setting(setting) -> AntsSetting:
    if isinstance(setting, str):
        if setting not in SETTINGS:
            raise ValueError(f"unknown ANTs setting {setting!r}: use one of {sorted(SETTINGS)} or an AntsSetting")
        return SETTINGS[setting]
    if not isinstance(setting, AntsSetting):
        raise ValueError(f"setting must be a key of SETTINGS or an AntsSetting, got {type(setting).__name__}")
    if not isinstance(setting.options, dict):
        raise ValueError(f"AntsSetting.options must be a dict, got {type(setting.options).__name__}")
    bad = _RESERVED & set(setting.options)
    if bad:
        raise ValueError(f"AntsSetting.options may not set {sorted(bad)}: register() sets them (seed: use seed=)")
    return setting


def _check_int(name: str, v, lo: int, hi: int | None = None) -> int:
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < lo or (hi is not None and v > hi):
        rng = f">= {lo}" if hi is None else f"in {lo}..{hi}"
        raise ValueError(f"{name} must be an integer {rng}, got {v!r}")
    return int(v)


# ---------------------------------------------------------------------------------------------- workers
_WORKERS: dict[int, subprocess.Popen] = {}
_LOCK = threading.Lock()


def _start_worker(threads: int) -> subprocess.Popen:
    env = dict(os.environ)
    env[THREADS_ENV] = str(threads)
    src = str(Path(__file__).resolve().parents[2])  # the directory holding the companion package
    env["PYTHONPATH"] = os.pathsep.join([src] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    return subprocess.Popen(
        [sys.executable, "-c", "from companion.sparsevm.ants import _serve; _serve()"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env,
        # its own session: a Ctrl-C (or a Jupyter kernel's interrupt) meant for the parent does not reach it; it
        # ends when its stdin closes, i.e. with the parent
        start_new_session=True,
    )


def shutdown_workers() -> None:
    """End the worker processes (they are restarted on demand)."""
    with _LOCK:
        for threads, proc in list(_WORKERS.items()):
            _stop(proc)
            del _WORKERS[threads]


def _stop(proc: subprocess.Popen) -> None:
    try:
        proc.stdin.close()
        proc.wait(timeout=10)
    except Exception:  # noqa: BLE001 -- best effort at shutdown
        proc.kill()
        proc.wait()
    finally:
        if proc.stdout:
            proc.stdout.close()


def _forget_workers_after_fork() -> None:
    """A forked child must not talk to its parent's workers (their pipes are shared): it starts its own."""
    global _LOCK
    _WORKERS.clear()
    _LOCK = threading.Lock()


atexit.register(shutdown_workers)
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_workers_after_fork)


def _call_worker(threads: int, request: dict) -> dict:
    with _LOCK:
        proc = _WORKERS.get(threads)
        if proc is None or proc.poll() is not None:
            proc = _WORKERS[threads] = _start_worker(threads)
        try:
            pickle.dump(request, proc.stdin, protocol=pickle.HIGHEST_PROTOCOL)
            proc.stdin.flush()
            status, payload, tb = pickle.load(proc.stdout)
        except (EOFError, BrokenPipeError, pickle.UnpicklingError) as e:
            del _WORKERS[threads]
            code = proc.wait()
            raise RuntimeError(f"the ANTs worker process ({threads} thread(s)) died with exit code {code}; "
                               "see its messages on stderr") from e
    if status == "error":
        payload.add_note(f"raised in the ANTs worker process:\n{tb}")
        raise payload
    return payload


def _serve() -> None:  # pragma: no cover -- runs in the worker subprocess
    """Worker loop: read pickled requests on stdin, answer on the original stdout (ITK output goes to stderr)."""
    out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # anything ANTs/ITK prints to stdout must not corrupt the protocol
    sys.stdout = sys.stderr
    inp = sys.stdin.buffer
    while True:
        try:
            request = pickle.load(inp)
        except EOFError:
            return
        try:
            reply = ("ok", _register_here(**request), "")
        except Exception as e:  # noqa: BLE001 -- sent back and re-raised in the parent
            reply = ("error", e, traceback.format_exc())
        try:
            data = pickle.dumps(reply, protocol=pickle.HIGHEST_PROTOCOL)
        except Exception:  # noqa: BLE001 -- an exception that does not pickle
            data = pickle.dumps(("error", RuntimeError(repr(reply[1])), reply[2]))
        out.write(data)
        out.flush()


def _register_here(fixed, moving, labels, spacing, type_of_transform, options, seed) -> dict:  # pragma: no cover
    import inspect
    import tempfile
    import time

    import ants

    known = set(inspect.signature(ants.registration).parameters) - {"kwargs"}
    unknown = set(options) - known
    if unknown:
        raise ValueError(f"unknown ants.registration option(s) {sorted(unknown)} (they would be silently ignored)")
    f = ants.from_numpy(fixed, spacing=spacing)
    m = ants.from_numpy(moving, spacing=spacing)
    lab = ants.from_numpy(labels.astype(np.float32), spacing=spacing)
    ants.config._random_seed = seed + 1  # antsRegistration --random-seed; 0 would mean "from the clock"
    with tempfile.TemporaryDirectory(prefix="companion-ants-") as tmp:
        w0, c0 = time.perf_counter(), time.process_time()
        reg = ants.registration(f, m, type_of_transform=type_of_transform, outprefix=os.path.join(tmp, "tx"),
                                **options)
        warped_labels = ants.apply_transforms(f, lab, transformlist=reg["fwdtransforms"],
                                              interpolator=LABEL_INTERPOLATOR)
        seconds, cpu = time.perf_counter() - w0, time.process_time() - c0
        image = reg["warpedmovout"].numpy().astype(np.float32)
        lab_out = np.rint(warped_labels.numpy()).astype(np.uint8)
    return {"warped_image": image, "warped_labels": lab_out, "seconds": seconds, "cpu_seconds": cpu,
            "threads": int(os.environ.get(THREADS_ENV, "0"))}


# ---------------------------------------------------------------------------------------------- API
def register(
    fixed: np.ndarray,
    moving: np.ndarray,
    moving_labels: np.ndarray,
    *,
    spacing_mm: float,
    setting: str | AntsSetting = "syncc-fast",
    threads: int = 1,
    seed: int = 0,
) -> AntsResult:
    """Register the atlas ``moving`` to the subject ``fixed`` with ANTs; warp ``moving_labels`` the same way.

    ``fixed``/``moving``: ``(D, H, W)`` real, finite, same shape (the subject is the linearly interpolated sparse
    scan); ``moving_labels``: integer labels 0..255 on the atlas grid. ``threads`` ITK threads (a worker process
    per thread count); ``seed`` >= 0 fixes ANTs' sampling (bit-identical results with ``threads=1``).
    """
    fixed = _check_image("fixed", fixed)
    moving = _check_image("moving", moving, fixed.shape)
    labels = _check_labels(moving_labels, fixed.shape)
    spacing = _check_spacing(spacing_mm)
    st = _check_setting(setting)
    threads = _check_int("threads", threads, 1)
    seed = _check_int("seed", seed, 0, 2**31 - 2)
    out = _call_worker(threads, dict(fixed=fixed, moving=moving, labels=labels, spacing=spacing,
                                     type_of_transform=st.type_of_transform, options=dict(st.options), seed=seed))
    return AntsResult(**out)
