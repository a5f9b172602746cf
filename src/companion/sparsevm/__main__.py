"""Train chapter 4's learned registration methods from the command line -- the chapter's own functions, the same
under torchrun.  Checkpoints go to the usual cache (``$COMPANION_CHECKPOINTS``), so the notebook then loads them::

    torchrun --nproc_per_node 4 -m companion.sparsevm --scale paper --device cuda --out results/sparsevm-train
    # some methods, other knobs: --methods "SparseVM SLCC" --set epochs=10
"""
from __future__ import annotations


def main(argv: list[str] | None = None) -> int:
    """Train VoxelMorph CC, SparseVM SMSE and SLCC with the chapter's functions; each rank writes ``rank<r>.json``
    (its models' weight digests) to ``--out``."""
    import argparse

    from ..chapter import parse_training_arguments, start, training_arguments
    from ..training import distributed, state_digest, write_rank_report
    from . import chapter as ch
    from .train import METHODS

    ap = argparse.ArgumentParser(prog="python -m companion.sparsevm",
                                 description="Train VoxelMorph CC and SparseVM (SMSE, SLCC); torchrun-ready.")
    training_arguments(ap, METHODS)
    args, methods, overrides = parse_training_arguments(ap, METHODS, argv)

    with distributed(args.device) as device:
        run = start("sparsevm", scale=args.scale, data=args.data, device=device, seed=args.seed,
                    output_dir=args.out, overrides=overrides)
        ch.check(run)
        cohort = ch.load(run)
        digests = {name: state_digest(ch.train_method(run, cohort, METHODS[name]).model) for name in methods}
        write_rank_report(args.out, digests)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
