"""Train chapter 2's models from the command line -- the chapter's own functions, the same under torchrun.
Checkpoints go to the usual cache (``$COMPANION_CHECKPOINTS``), so the notebook then loads them::

    torchrun --nproc_per_node 4 -m companion.vpbsd --scale paper --device cuda
    # one fold, some methods, other knobs: --fold 0 --methods "Light UNet,VpbSD" --set student_epochs=10
"""
from __future__ import annotations


def main(argv: list[str] | None = None) -> int:
    """Pretrain the teacher, then (``--stage all``) fine-tune it and train the students fold by fold, with the
    chapter's functions; each rank writes ``rank<r>.json`` (its models' weight digests) to ``--out``."""
    import argparse

    from ..chapter import parse_training_arguments, start, training_arguments
    from ..training import distributed, state_digest, write_rank_report
    from . import chapter as ch
    from .train import METHODS

    ap = argparse.ArgumentParser(prog="python -m companion.vpbsd",
                                 description="Train VpbSD's teacher and students; torchrun-ready.")
    training_arguments(ap, METHODS)
    ap.add_argument("--stage", default="all", choices=["pretrain", "all"])
    ap.add_argument("--fold", type=int, default=None, help="train this fold only (default: every fold)")
    args, methods, overrides = parse_training_arguments(ap, METHODS, argv)

    with distributed(args.device) as device:
        run = start("vpbsd", scale=args.scale, data=args.data, device=device, seed=args.seed, output_dir=args.out,
                    overrides=overrides)
        ch.check(run)
        data = ch.load_data(run)
        pre = ch.pretrain_teacher(run, data)
        digests = {"teacher-pretrain": state_digest(pre.model)}
        if args.stage == "all":
            for fold, (train_idx, _) in enumerate(ch.fold_splits(run, data)):
                if args.fold is not None and fold != args.fold:
                    continue
                ft, key = ch.finetune_teacher(run, data, pre, fold, train_idx)
                digests[f"teacher-finetune-fold{fold}"] = state_digest(ft.model)
                targets = ch.LazyTargets(ft.model, [data.images[i] for i in train_idx] + data.unlabeled)
                for name in methods:
                    st = ch.train_student(run, data, METHODS[name], fold, train_idx, key, targets,
                                          pre.model.bottleneck_channels)
                    digests[f"{name} fold{fold}"] = state_digest(st.model)
        write_rank_report(args.out, digests, pretrain_history=pre.history)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
