"""Train chapter 3's patch models from the command line -- the chapter's own functions, the same under torchrun.
Checkpoints go to the usual cache (``$COMPANION_CHECKPOINTS``), so the notebook then loads them::

    torchrun --nproc_per_node 4 -m companion.hyperbolic --scale paper --device cuda
    # some methods, the brain task too, other knobs: --methods "Hyperbolic base" --task both --set epochs=10
"""
from __future__ import annotations


def main(argv: list[str] | None = None) -> int:
    """Train the patch models (Tables 1-2 and, with ``--task both``, Table 3) with the chapter's functions; each
    rank writes ``rank<r>.json`` (its models' weight digests) to ``--out``."""
    import argparse
    import json
    from pathlib import Path

    from ..chapter import start
    from ..training import distributed, state_digest, world
    from . import chapter as ch
    from .train import METHODS

    ap = argparse.ArgumentParser(prog="python -m companion.hyperbolic",
                                 description="Train the hyperbolic VAE, its ablations and the patch baselines; "
                                             "torchrun-ready.")
    ap.add_argument("--scale", default="ci", choices=["ci", "laptop", "paper"])
    ap.add_argument("--data", default="default", help="brain data: default, synthetic, msd_task01_braintumour or "
                                                      "brats2019")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="cpu", help="cpu or cuda (each rank uses cuda:LOCAL_RANK)")
    ap.add_argument("--task", default="synthetic", choices=["synthetic", "both"])
    ap.add_argument("--methods", default=",".join(METHODS), help="comma-separated names of METHODS")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=JSON", help="override a preset knob")
    ap.add_argument("--out", required=True, help="folder for results and the per-rank JSON files")
    args = ap.parse_args(argv)
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    bad = [m for m in methods if m not in METHODS]
    if bad:
        ap.error(f"unknown methods {bad}; valid: {', '.join(METHODS)}")
    overrides = {}
    for item in args.set:
        key, _, value = item.partition("=")
        try:
            overrides[key] = json.loads(value)
        except json.JSONDecodeError:
            ap.error(f"--set {item!r}: the value must be JSON (e.g. 3, 0.01, [16, 32, 64, 128])")

    with distributed(args.device) as device:
        run = start("hyperbolic", scale=args.scale, data=args.data, device=device, seed=args.seed,
                    output_dir=args.out, overrides=overrides)
        ch.check(run)
        digests = {}
        synth = ch.load_synthetic(run)
        for name in methods:
            st = ch.train_method(run, METHODS[name], [v.image for v in synth.train], "synthetic")
            digests[f"synthetic {name}"] = state_digest(st.model)
        if args.task == "both":
            brain = ch.load_brain(run)
            for name in methods:
                if name in (ch.OURS, ch.tr.NALEPA.name, ch.tr.MORIYA.name):
                    st = ch.train_method(run, METHODS[name], [v.image for v in brain.train], "brain")
                    digests[f"brain {name}"] = state_digest(st.model)
        rank, size = world()
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / f"rank{rank}.json").write_text(json.dumps({"rank": rank, "world_size": size, "digests": digests},
                                                         indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
