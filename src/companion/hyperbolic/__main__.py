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

    from ..chapter import parse_training_arguments, start, training_arguments
    from ..training import distributed, state_digest, write_rank_report
    from . import chapter as ch
    from .train import METHODS

    ap = argparse.ArgumentParser(prog="python -m companion.hyperbolic",
                                 description="Train the hyperbolic VAE, its ablations and the patch baselines; "
                                             "torchrun-ready.")
    training_arguments(ap, METHODS)
    ap.add_argument("--task", default="synthetic", choices=["synthetic", "both"])
    args, methods, overrides = parse_training_arguments(ap, METHODS, argv)

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
        write_rank_report(args.out, digests)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
