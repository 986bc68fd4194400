"""Command line: parse, call, print. Errors in user input exit with code 2 and one paragraph."""

from __future__ import annotations

import argparse
import sys

__all__ = ["main"]

EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="skd-tune", description="Hyperparameter search for subclass knowledge distillation on Ray Tune + Optuna."
    )
    sub = p.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run", help="run (or resume) the experiment a YAML spec describes")
    r.add_argument("spec", help="a YAML spec (e.g. search_spaces/digits.yaml), or an experiment directory to resume")
    r.add_argument(
        "--address", default=None, help="Ray cluster to join ('auto', 'ray://host:10001'); default: start local Ray"
    )
    r.add_argument(
        "--node-wait",
        type=float,
        default=None,
        metavar="SECONDS",
        help="on a joined cluster, how long to wait for a node that can hold a trial (default: 300)",
    )
    r.add_argument(
        "--force",
        action="store_true",
        help="take over an experiment on shared storage whose driver (on another host) stopped sending heartbeats",
    )
    r.add_argument("-v", "--verbose", action="store_true", help="show Ray's own logs and worker output")
    st = sub.add_parser("status", help="stages done, trials by status, best so far (works while a search runs)")
    st.add_argument("experiment", help="experiment directory, e.g. runs/digits-skd")
    rp = sub.add_parser(
        "report", help="method table, leaderboard and plots: report/index.html + report/summary.md (works mid-run)"
    )
    rp.add_argument("experiment", help="experiment directory, e.g. runs/digits-skd")
    rp.add_argument("--out", default=None, help="where to write the report (default: EXPERIMENT/report)")
    rp.add_argument("--top", type=int, default=10, help="trials in the leaderboard (default: 10)")
    ex = sub.add_parser("export", help="the best student as state_dict + meta.json, TorchScript and ONNX, each checked")
    ex.add_argument("experiment", help="experiment directory (its export/ stage must be done), or an export directory")
    ex.add_argument("--out", required=True, help="directory to write the artefacts into")
    chosen = ex.add_mutually_exclusive_group()
    chosen.add_argument("--trial", default=None, help="export this student trial (a finished one) instead of the best")
    chosen.add_argument(
        "--pick",
        default=None,
        help="export the best trial within a budget on a trials.parquet column, e.g. 'params<=20000' (<, <=, >, >=)",
    )
    ex.add_argument(
        "--formats",
        default="state_dict,torchscript,onnx",
        help="comma-separated: state_dict, torchscript, onnx (default: all three; onnx needs the [onnx] extra)",
    )
    pr = sub.add_parser("predict", help="class, its probability and subclass probabilities for each input")
    pr.add_argument("export_dir", help="a directory written by `skd-tune export` (or an experiment's export/)")
    pr.add_argument(
        "inputs", nargs="+", help="image files (PNG/JPEG) for image models; .npy or .csv files of rows for tabular ones"
    )
    d = sub.add_parser("data", help="dataset tools")
    dsub = d.add_subparsers(dest="data_command", required=True)
    sm = dsub.add_parser("synth-mhist", help="write a synthetic dataset in MHIST's layout (annotations.csv + images/)")
    sm.add_argument("dir", help="directory to write into (created if missing)")
    sm.add_argument("--n", type=int, default=3152, help="number of images (default: 3152, as MHIST)")
    sm.add_argument("--seed", type=int, default=0, help="random seed; the same seed writes the same files (default: 0)")
    sm.add_argument("--size", type=int, default=224, help="image side in pixels (default: 224, as MHIST)")
    eo = dsub.add_parser(
        "export-order",
        help="write a spec's splits (DIR/{train,val,test}_x.npy, in order) and DIR/order.json, for teacher.source: logits",
    )
    eo.add_argument("spec", help="the YAML spec whose data and split the logits are for")
    eo.add_argument("dir", help="directory to write into; put the teacher's logits there as {train,val,test}.npy")
    te = sub.add_parser(
        "teacher", help="train a spec's teacher here (no Ray) and save it, for teacher.source: checkpoint"
    )
    te.add_argument("spec", help="a YAML spec: its teacher.* fields (a class-output teacher for clustered subclasses)")
    te.add_argument("--out", required=True, help="the file to write, e.g. teachers/digits-classes.pt")
    te.add_argument(
        "--format",
        choices=("state_dict", "torchscript"),
        default="state_dict",
        help="state_dict of teacher.model, or TorchScript returning (logits, embeddings) (default: state_dict)",
    )
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    from .errors import SearchInterrupted, UserError
    from .spec import SpecError

    try:
        return COMMANDS[args.command](args)
    except (SpecError, UserError) as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except (SearchInterrupted, KeyboardInterrupt) as e:
        print(f"interrupted: {e or 'run the same command again to resume'}", file=sys.stderr)
        return EXIT_INTERRUPTED


def _run(args: argparse.Namespace) -> int:
    from .experiment import resolve_spec
    from .pipeline import run
    from .progress import Terminal

    # On a terminal, one live display per Tune stage redrawn in place; else (a log, a pipe) plain lines.
    printer = Terminal() if sys.stdout.isatty() else (lambda line: print(line, flush=True))
    try:
        summary = run(
            resolve_spec(args.spec),
            address=args.address,
            verbose=args.verbose,
            resume_cmd=f"skd-tune run {args.spec}",
            printer=printer,
            node_wait_s=args.node_wait,
            force=args.force,
        )
    finally:
        if isinstance(printer, Terminal):
            printer.close()  # a display a stopped run left up
    print(f"done in {summary.seconds:.0f} s: {summary.experiment}")
    return 0


def _status(args: argparse.Namespace) -> int:
    from .status import experiment_status, format_status

    print(format_status(experiment_status(args.experiment), resume_cmd=f"skd-tune run {args.experiment}"))
    return 0


def _report(args: argparse.Namespace) -> int:
    from pathlib import Path

    from .experiment import Experiment
    from .report import build_report

    exp = Experiment.existing(args.experiment)
    report = build_report(exp, out_dir=Path(args.out) if args.out else None, top=args.top)
    print(report.text)
    print(f"report: {report.html} (summary: {report.summary})")
    if exp.remote is not None and not args.out:
        exp.sync(exp.report_dir.name)
        print(f"uploaded to {exp.location.rstrip('/')}/{exp.report_dir.name}")
    return 0


def _export(args: argparse.Namespace) -> int:
    from .serve import export_artifacts, format_export, resolve_export_dir

    formats = [f.strip() for f in args.formats.split(",") if f.strip()]
    if args.trial is None and args.pick is None:
        print(format_export(export_artifacts(resolve_export_dir(args.experiment), args.out, formats)))
        return 0
    from .experiment.results import format_value
    from .serve.chosen import export_chosen

    trial, exported, checks = export_chosen(args.experiment, args.out, formats, trial_id=args.trial, pick=args.pick)
    params = ", ".join(f"{k}={format_value(v)}" for k, v in exported["params"].items())
    print(
        f"trial {trial['trial_id']}{' (' + params + ')' if params else ''}: test f1 {exported['test_metrics']['f1']:.4f}"
    )
    print(format_export(checks))
    return 0


def _predict(args: argparse.Namespace) -> int:
    from .serve import format_predictions, predict_inputs, resolve_export_dir

    print(format_predictions(predict_inputs(resolve_export_dir(args.export_dir), args.inputs)))
    return 0


def _data(args: argparse.Namespace) -> int:
    return {"synth-mhist": _synth_mhist, "export-order": _export_order}[args.data_command](args)


def _export_order(args: argparse.Namespace) -> int:
    from .data import load_dataset
    from .spec import load_spec
    from .teachers import export_order

    spec = load_spec(args.spec)
    data = load_dataset(spec.data, spec.seed)
    path = export_order(data, args.dir)
    sizes = "/".join(str(len(data.split(s))) for s in ("train", "val", "test"))
    print(f"{path}: the order of {data.name}'s train/val/test rows ({sizes}); inputs in {args.dir}/<split>_x.npy")
    return 0


def _teacher(args: argparse.Namespace) -> int:
    from .data import load_dataset
    from .spec import load_spec
    from .teachers import train_teacher
    from .teachers.checkpoint import save_teacher

    spec = load_spec(args.spec)
    data = load_dataset(spec.data, spec.seed)
    model = train_teacher(spec, data)
    print(f"{save_teacher(model, data, args.out, args.format)}: teacher {spec.teacher.model} ({args.format})")
    return 0


def _synth_mhist(args: argparse.Namespace) -> int:
    import time

    from .data.mhist import ANNOTATIONS, read_annotations
    from .data.synth import write_synthetic_mhist

    t0 = time.perf_counter()
    out = write_synthetic_mhist(args.dir, n=args.n, seed=args.seed, size=args.size)
    seconds = time.perf_counter() - t0
    print(f"{out}: {read_annotations(out / ANNOTATIONS).summary()}, {args.size}x{args.size} px, in {seconds:.1f} s")
    return 0


COMMANDS = {
    "run": _run,
    "status": _status,
    "report": _report,
    "export": _export,
    "predict": _predict,
    "data": _data,
    "teacher": _teacher,
}


if __name__ == "__main__":
    sys.exit(main())
