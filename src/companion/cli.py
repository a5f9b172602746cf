"""The ``companion`` command line: data, report, run, book."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path


def _table(rows: list[list[str]], header: list[str]) -> str:
    widths = [max(len(str(r[i])) for r in rows + [header]) for i in range(len(header))]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    return "\n".join([fmt.format(*header), fmt.format(*["-" * w for w in widths])] + [fmt.format(*r) for r in rows])


def cmd_data(args: argparse.Namespace) -> int:
    from .data import download as f
    from .data.manifests import get_manifest, load_manifests

    if args.action == "list":
        ms = sorted(load_manifests().values(), key=lambda m: m.id)
        rows = [[m.id, m.access_summary, m.license or "not stated", ",".join(m.chapters), m.size or "-",
                 m.checksums or "-"] for m in ms]
        print(_table(rows, ["id", "access", "license", "chapters", "size", "checksums"]))
        return 0
    if args.action == "status":
        rows = [[s.id, s.access, s.state, s.where] for s in f.status(args.id)]
        print(f"data root: {f.data_root()}  (set COMPANION_DATA to change)")
        print(_table(rows, ["id", "access", "state", "where"]))
        return 0
    if args.action == "consolidate":
        return cmd_consolidate(args)
    if not args.id:
        print(f"companion data {args.action}: a dataset id is required (see `companion data list`)", file=sys.stderr)
        return 2
    try:
        if args.action == "fetch":
            m = get_manifest(args.id)
            if m.access != "open" and m.downloadable:  # e.g. atm22: the terms ask for registration, the host does not
                print(f"note: {m.id} has access '{m.access}' although {', '.join(m.download_hosts)} serves the files "
                      f"without a login:\n{(m.manual or '').strip()}", file=sys.stderr)
            path = f.fetch(args.id, allow_unverified=args.allow_unverified, mirror=args.mirror)
            state = f.status(args.id)[0].state
            print(f"{args.id}: ready in {path}" + (" (copied from a local mirror)" if "mirror" in state else ""))
            return 0
        problems = f.verify(args.id)
    except (f.DataAccessError, f.ChecksumError, f.UnsafeArchiveError, KeyError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if problems:
        print("\n".join(problems), file=sys.stderr)
        return 1
    print(f"{args.id}: verified")
    return 0


def cmd_consolidate(args: argparse.Namespace) -> int:
    """`companion data consolidate`: the VAEsselSparse dataset recipe (Sec. 4), see companion.data.consolidate."""
    from .data import consolidate as c
    from .data.download import DataAccessError

    if not args.out:
        print("companion data consolidate: --out DIR is required", file=sys.stderr)
        return 2
    if args.id:
        print(f"companion data consolidate: pass datasets with --ids (got {args.id!r})", file=sys.stderr)
        return 2
    ids = [i.strip() for i in args.ids.split(",") if i.strip()] if args.ids else None
    try:
        df = c.consolidate(ids, args.out, shape=args.shape, target_mm=args.spacing, seed=args.seed,
                           limit=args.limit, check=not args.no_check)
    except (DataAccessError, ValueError, FileNotFoundError) as exc:  # FileNotFoundError: files off the layout
        print(f"error: {exc}", file=sys.stderr)
        return 1
    counts = df.groupby(["dataset", "split"]).size().unstack(fill_value=0).reindex(columns=list(c.SPLITS),
                                                                                    fill_value=0)
    rows = [[d, c.SOURCES[d], *[str(counts.at[d, s]) for s in c.SPLITS], str(counts.loc[d].sum())]
            for d in counts.index]
    totals = [str(int((df["split"] == s).sum())) for s in c.SPLITS]
    rows.append(["total", "", *totals, str(len(df))])
    print(f"consolidated {len(df)} cases into {args.out} ({args.shape}^3 voxels at {args.spacing:g} mm); "
          f"index {Path(args.out) / c.INDEX_FILE}")
    print(_table(rows, ["dataset", "kind", *c.SPLITS, "total"]))
    print("  ".join(f"{s}: {n}" for s, n in zip(c.SPLITS, totals)))
    lost = int(df["lost_voxels"].sum())
    if lost:
        print(f"warning: {lost} foreground voxels in {int((df['lost_voxels'] > 0).sum())} case(s) lay outside the "
              f"{args.shape}^3 cube and were cropped (column lost_voxels of the index)", file=sys.stderr)
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from .results import report_markdown

    text = report_markdown(args.results, args.scale)
    if args.out:
        Path(args.out).write_text(text)
    else:
        print(text)
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from .results.compare import compare, comparison_text

    try:
        cmp = compare(args.run, args.reference, rtol=args.rtol)
    except (FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(comparison_text(cmp, all_cells=not args.flagged_only))
    return cmp.exit_code(strict=args.strict)


def cmd_reference(args: argparse.Namespace) -> int:
    from .results.reference import update_reference

    try:
        written = update_reference(args.results, scale=args.scale, chapters=args.chapters)
    except (FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    for d in written:
        print(f"reference updated: {d}")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from .build import execute_chapter
    from .results import results_root

    import yaml

    params = {}
    for kv in args.param or []:
        key, _, value = kv.partition("=")
        params[key] = yaml.safe_load(value)
    out = Path(args.out or f"_build/executed/{args.scale}/{args.chapter}.ipynb")
    secs = execute_chapter(args.chapter, args.scale, out, results=results_root(args.results), parameters=params,
                           log_output=True)
    print(f"{args.chapter} at {args.scale}: {secs:.0f} s; notebook {out}")
    return 0


def cmd_book(args: argparse.Namespace) -> int:
    from .build import build

    try:
        build(args.scale, strict=args.strict, chapters=args.chapters, results=args.results, student=args.student,
              force=args.force)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


def cmd_launch_cell(args: argparse.Namespace) -> int:
    from . import launch
    from .build import REPO

    try:
        stale = launch.sync(REPO, write=not args.check)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    url, branch = launch.repository_setting(REPO)
    for p in stale:
        print(f"{'differs' if args.check else 'rewritten'}: {p.relative_to(REPO)}")
    if not stale:
        print(f"every notebook's first cell installs from {url} (branch {branch})")
    return 1 if stale and args.check else 0


def main(argv: list[str] | None = None) -> int:
    from .scales import scale_names

    p = argparse.ArgumentParser(prog="companion", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)
    d = sub.add_parser("data", help="datasets: list | status | fetch ID | verify ID | consolidate --out DIR")
    d.add_argument("action", choices=["list", "status", "fetch", "verify", "consolidate"])
    d.add_argument("id", nargs="?")
    d.add_argument("--allow-unverified", action="store_true", help="accept files whose manifest has no checksum")
    d.add_argument("--mirror", action="append", metavar="DIR",
                   help="fetch: take files from DIR/<mirror id>/ before the network (repeatable; also "
                        "$COMPANION_MIRROR, folders separated by os.pathsep); copies are verified like downloads")
    dc = d.add_argument_group("consolidate", "VAEsselSparse Sec. 4: binarize, resample isotropic, centre-pad, "
                                             "split 80/10/10, write sparse coordinates")
    dc.add_argument("--out", help="output folder (<split>/<dataset>__<case>.npz and index.csv)")
    dc.add_argument("--shape", type=int, default=512, help="edge of the common cube in voxels (default 512)")
    dc.add_argument("--spacing", type=float, default=0.5, help="isotropic voxel size in mm (default 0.5)")
    dc.add_argument("--ids", help="comma-separated dataset ids (default: the paper's seven sources)")
    dc.add_argument("--limit", type=int, help="at most N cases per dataset")
    dc.add_argument("--seed", type=int, default=0, help="seed of the train/val/test split (default 0)")
    dc.add_argument("--no-check", action="store_true", help="skip verifying each dataset against its manifest")
    d.set_defaults(func=cmd_data)
    r = sub.add_parser("report", help="aggregate all chapters' scoreboards (markdown)")
    r.add_argument("--scale", choices=scale_names())
    r.add_argument("--results", help="results root (default: $COMPANION_RESULTS or ./results)")
    r.add_argument("--out", help="write to this file instead of stdout")
    r.set_defaults(func=cmd_report)
    c = sub.add_parser("compare", help="lay a chapter run beside its committed reference: values, flagged "
                                       "differences, flipped verdicts (exit 1 when a verdict flips)")
    c.add_argument("run", help="a chapter run folder, e.g. results/vaesselsparse/laptop")
    c.add_argument("reference", nargs="?", help="reference folder (default: book/reference/<chapter>/<scale>)")
    c.add_argument("--rtol", type=float, default=0.10, help="relative tolerance for table values (default 0.10)")
    c.add_argument("--strict", action="store_true", help="exit 1 also when a verdict changes between decided and "
                                                         "undecided, or a table is missing")
    c.add_argument("--flagged-only", action="store_true", help="list only the flagged table values")
    c.set_defaults(func=cmd_compare)
    rf = sub.add_parser("reference", help="copy the text outputs of chapter runs into book/reference/ (the "
                                          "committed reference results)")
    rf.add_argument("--scale", default="laptop", choices=scale_names())
    rf.add_argument("--results", help="results root (default: $COMPANION_RESULTS or ./results)")
    rf.add_argument("--chapters", nargs="*")
    rf.set_defaults(func=cmd_reference)
    ru = sub.add_parser("run", help="execute one chapter notebook with papermill")
    ru.add_argument("chapter")
    ru.add_argument("--scale", default="laptop", choices=scale_names())
    ru.add_argument("-p", "--param", action="append", help="notebook parameter key=value (YAML value)")
    ru.add_argument("--results")
    ru.add_argument("--out")
    ru.set_defaults(func=cmd_run)
    b = sub.add_parser("book", help="execute every chapter and build the HTML book")
    b.add_argument("--scale", default="laptop", choices=scale_names())
    b.add_argument("--strict", action="store_true", help="Sphinx warnings are errors")
    b.add_argument("--chapters", nargs="*")
    b.add_argument("--results")
    b.add_argument("--student", action="store_true", help="leave the exercises' solutions out of the pages and "
                                                          "the downloadable notebooks")
    b.add_argument("--force", action="store_true", help="re-execute every chapter, even where the cached "
                                                        "execution in _build/executed-cache is up to date")
    b.set_defaults(func=cmd_book)
    lc = sub.add_parser("launch-cell", help="rewrite every notebook's first cell (which installs companion on "
                                            "Colab/Binder/JupyterHub) from _config.yml's repository setting")
    lc.add_argument("--check", action="store_true", help="only list notebooks that differ (exit 1 if any)")
    lc.set_defaults(func=cmd_launch_cell)
    args = p.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
