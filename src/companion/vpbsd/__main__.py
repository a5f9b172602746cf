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
    import json
    from pathlib import Path

    from ..chapter import start
    from ..training import distributed, state_digest, world
    from . import chapter as ch
    from .train import METHODS

    ap = argparse.ArgumentParser(prog="python -m companion.vpbsd",
                                 description="Train VpbSD's teacher and students; torchrun-ready.")
    ap.add_argument("--scale", default="ci", choices=["ci", "laptop", "paper"])
    ap.add_argument("--data", default="default", help="default, synthetic or vessap")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="cpu", help="cpu or cuda (each rank uses cuda:LOCAL_RANK)")
    ap.add_argument("--stage", default="all", choices=["pretrain", "all"])
    ap.add_argument("--fold", type=int, default=None, help="train this fold only (default: every fold)")
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
            ap.error(f"--set {item!r}: the value must be JSON (e.g. 3, 0.01, [32, 64, 64])")

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
        rank, size = world()
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / f"rank{rank}.json").write_text(json.dumps({"rank": rank, "world_size": size, "digests": digests,
                                                          "pretrain_history": pre.history}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
