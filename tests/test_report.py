"""Tests of `skd-tune report`: experiment directories written in tmp_path with the real writers
(ResultsTables, write_table_atomic, a validated Spec), reports read back as a user would read them
(PNG files, summary.md, index.html in headless Chromium, the CLI's text and exit code)."""

from __future__ import annotations

import json
import math
import os
import re
import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from PIL import Image

from skd_tune.errors import NotAnExperiment, ResultsError
from skd_tune.experiment import Experiment, ResultsTables, write_table_atomic
from skd_tune.methods import METHODS, TEST_METRICS
from skd_tune.report import Report, build_report
from skd_tune.spec import Spec

from .conftest import TINY_SPEC, deep_update, run_cli

# The search space of the complete experiment: every kind of distribution the spec knows.
SPACE = {
    "temperature": {"loguniform": [1.0, 20.0]},
    "w_skd": {"uniform": [0.0, 1.0]},
    "w_kd": {"uniform": [0.0, 1.0]},
    "batch_size": {"int": [32, 256]},
    "curriculum.pacing": {"choice": ["none", "linear", "root"]},
}
MAX_EPOCHS = 6
TOP = 5


# --------------------------------------------------------------------------------------------------
# Writing synthetic experiments with the real writers


def _write_spec(root: Path, changes: dict) -> Spec:
    base = {"name": root.name, "storage": str(root.parent), "methods": {"seeds": 3}}
    spec = Spec.model_validate(deep_update(deep_update(TINY_SPEC, base), changes))
    root.mkdir(parents=True, exist_ok=True)
    (root / "spec.yaml").write_text(yaml.safe_dump(spec.model_dump(mode="json"), sort_keys=False))
    return spec


def _write_state(root: Path, stages: dict) -> None:
    (root / "state.json").write_text(json.dumps({"spec_hash": "0" * 16, "stages": stages}, indent=2))


def _sample(space: dict, rng: np.random.Generator) -> dict:
    """One configuration drawn from a spec search space (as the searcher would)."""
    out = {}
    for name, dist in space.items():
        kind, arg = next((k, v) for k, v in dist.items() if v is not None)
        if kind == "uniform":
            out[name] = float(rng.uniform(*arg))
        elif kind == "loguniform":
            out[name] = float(np.exp(rng.uniform(np.log(arg[0]), np.log(arg[1]))))
        elif kind == "int":
            out[name] = int(rng.integers(arg[0], arg[1] + 1))
        else:
            out[name] = arg[int(rng.integers(len(arg)))]
    return out


def _final_f1(params: dict, rng: np.random.Generator) -> float:
    """The synthetic objective: strongly driven by w_skd, not at all by w_kd (nor anything else)."""
    return float(0.55 + 0.4 * params.get("w_skd", 0.5) + rng.normal(0, 0.004))


def _write_search(
    root: Path,
    spec: Spec,
    rng: np.random.Generator,
    statuses: list[str],
    table: str = "student",
    space: dict | None = None,
) -> dict[str, list[dict]]:
    """Student (or teacher) trials through ResultsTables; returns the epochs written, per trial."""
    space = spec.model_dump(mode="json")["search"]["space"] if space is None else space
    tables = ResultsTables(
        root / "results", list(space), spec.search.metric, spec.search.mode, min_interval_s=0, table=table
    )
    written: dict[str, list[dict]] = {}
    start = 1_795_000_000
    for i, status in enumerate(statuses):
        trial_id = f"{rng.integers(16**8):08x}"
        params = _sample(space, rng)
        final = _final_f1(params, rng)
        n_epochs = MAX_EPOCHS if status != "RUNNING" else 2
        if status == "TERMINATED" and final < 0.7:
            n_epochs = 2  # stopped early by the scheduler, as ASHA does with the weak ones
        rows = []
        for epoch in range(1, n_epochs + 1):
            f1 = final * (1 - 0.5 * math.exp(-epoch)) + rng.normal(0, 0.003)
            metrics = {
                "epoch": epoch,
                "val_f1": f1,
                "val_accuracy": f1 + 0.01,
                "val_precision": f1 - 0.01,
                "val_recall": f1 + 0.005,
                "val_auc": min(1.0, f1 + 0.05),
                "val_loss": 1.1 - f1 + rng.normal(0, 0.003),
                "val_subclass_accuracy": f1 - 0.2,
                "train_loss": 1.5 - f1,
                "epoch_time_s": 0.1,
                "epoch_end": start + 100 * i + epoch + 0.25,
                "time_total_s": 0.1 * epoch,
            }
            tables.add_epoch(trial_id, params, metrics)
            rows.append(metrics)
        if status != "RUNNING":
            tables.set_trial(trial_id, status=status, max_epochs=MAX_EPOCHS)
        else:
            tables.set_trial(trial_id, max_epochs=MAX_EPOCHS)
        written[trial_id] = rows
    tables.flush(force=True)
    tables.close()
    return written


def _write_methods(root: Path, rng: np.random.Generator) -> pd.DataFrame:
    """methods.parquet: 3 seeds per method, plus one errored KD run that must not count."""
    base = {"no-KD": 0.86, "KD": 0.89, "SKD": 0.92}
    rows = []
    for method in METHODS:
        for seed in range(3):
            row = {
                "method": method,
                "seed": seed,
                "trial_id": f"{method}-{seed}",
                "status": "TERMINATED",
                "temperature": 4.0,
                "w_ce": 1.0,
                "w_kd": 0.0 if method != "KD" else 0.8,
                "w_skd": 0.8 if method == "SKD" else 0.0,
                "lr": 0.01,
                "best_epoch": 5,
            }
            f1 = base[method] + rng.normal(0, 0.01)
            row |= {
                "val_f1": f1 + 0.01,
                "test_f1": f1,
                "test_accuracy": f1 + 0.02,
                "test_auc": f1 + 0.05,
                "test_precision": f1 - 0.01,
                "test_recall": f1 + 0.01,
            }
            rows.append(row)
    rows.append(
        {
            **rows[3],
            "seed": 3,
            "trial_id": "KD-3",
            "status": "ERROR",
            **{f"test_{m}": float("nan") for m in TEST_METRICS},
        }
    )
    runs = pd.DataFrame(rows)
    write_table_atomic(runs, root / "results" / "methods.parquet")
    return runs


def _data_json(rng: np.random.Generator) -> dict:
    counts = {split: rng.integers(20, 200, 6).tolist() for split in ("train", "val", "test")}
    train = np.array(counts["train"], float)
    to_class = [0, 0, 0, 1, 1, 1]
    bits = 0.0
    for c in (0, 1):
        mine = train[[i for i, k in enumerate(to_class) if k == c]]
        p = mine / mine.sum()
        bits += mine.sum() / train.sum() * float(-(p * np.log2(p)).sum())
    return {
        "source": "digits",
        "subclasses": "known",
        "class_names": ["0-4", "5-9"],
        "subclass_names": [f"digit {i}" for i in range(6)],
        "subclass_to_class": to_class,
        "split_sizes": {k: int(sum(v)) for k, v in counts.items()},
        "subclass_counts": counts,
        "label_bits_train": bits,
    }


def _metrics(rng: np.random.Generator, prefix: str = "") -> dict:
    return {f"{prefix}{m}": float(rng.uniform(0.85, 0.99)) for m in TEST_METRICS}


def _complete(root: Path, mode: str, seed: int) -> dict:
    """A finished experiment (all stages, method table, invented subclasses); returns what was written."""
    rng = np.random.default_rng(seed)
    metric = "val_f1" if mode == "max" else "val_loss"
    spec = _write_spec(root, {"search": {"metric": metric, "mode": mode, "num_samples": 14, "space": SPACE}})
    statuses = ["TERMINATED"] * 12 + ["ERROR"]
    written = _write_search(root, spec, rng, statuses)
    _write_search(root, spec, rng, ["TERMINATED"], table="teacher", space={})
    runs = _write_methods(root, rng)
    data = _data_json(rng)
    (root / "results" / "data.json").write_text(json.dumps(data))
    invented = {
        "scheme": "invented",
        "dead_share": 0.125,
        "ami_test": 0.4321,
        "per_class": [
            {"class": "0-4", "entropy_bits": 1.234, "max_entropy_bits": 1.585, "dead_share": 0.0},
            {"class": "5-9", "entropy_bits": 0.987, "max_entropy_bits": 1.585, "dead_share": 0.25},
        ],
    }
    (root / "results" / "subclasses.json").write_text(json.dumps(invented))
    teacher_test = _metrics(rng)
    best_id = _ranking(written, metric, mode)[0]
    _write_state(
        root,
        {
            "teacher": {
                "metrics": {"epoch": 4, **_metrics(rng, "val_"), "val_loss": 0.1, "val_subclass_accuracy": 0.9}
            },
            "teacher_logits": {
                "test_metrics": teacher_test,
                "subclass_bits": {"bits": 0.6123, "per_class": {"0-4": 0.7, "5-9": 0.5246}, "max_bits": 2.3219},
            },
            "student": {"trials": 13, "errored": 1},
            "export": {"trial_id": best_id, "path": str(root / "export"), "test_metrics": _metrics(rng)},
            "methods": {"seeds": [0, 1, 2]},
        },
    )
    return {
        "trials": written,
        "methods": runs,
        "data": data,
        "teacher_test": teacher_test,
        "metric": metric,
        "best_id": best_id,
    }


def _ranking(written: dict[str, list[dict]], metric: str, mode: str) -> list[str]:
    """Trial ids best first, from the epochs the test wrote."""
    pick = max if mode == "max" else min
    best = {t: pick(r[metric] for r in rows) for t, rows in written.items()}
    return sorted(best, key=best.get, reverse=mode == "max")


def _text_trials(text: str) -> list[tuple[str, float]]:
    """(trial id, metric) of the leaderboard rows in the CLI text."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("top ") and "student trials" in line)
    out = []
    for line in lines[start + 2 :]:
        m = re.match(r"^(\d+)\s+([0-9a-f]{8})\s+([0-9.]+)\s", line)
        if not m:
            break
        out.append((m.group(2), float(m.group(3))))
    return out


@pytest.fixture(scope="module")
def complete(tmp_path_factory) -> tuple[Report, dict]:
    root = tmp_path_factory.mktemp("runs") / "complete"
    written = _complete(root, "max", seed=1)
    return build_report(root, top=TOP), written


# --------------------------------------------------------------------------------------------------
# A complete experiment


def test_every_plot_is_a_real_picture(complete):
    report, _ = complete
    expected = {"methods", "pairs", "learning_curves", "history", "importances", "subclass_counts"}
    assert expected <= set(report.plots)
    assert len([k for k in report.plots if k.startswith("param_")]) == len(SPACE)  # one per searched parameter
    for name, path in report.plots.items():
        assert path.parent == report.html.parent and path.suffix == ".png"
        with Image.open(path) as img:
            img.verify()
        with Image.open(path) as img:
            width, height = img.size
            colours = img.convert("RGB").getcolors(maxcolors=width * height)
        assert 300 <= width <= 3000 and 200 <= height <= 3000, (name, img.size)
        assert len(colours) > 20, f"{name}: (nearly) a single flat colour"
        assert max(n for n, _ in colours) < 0.98 * width * height, f"{name}: almost every pixel has one colour"
    assert not [p.name for p in report.html.parent.iterdir() if p.name.startswith(".")]  # no temporary file left


def test_html_references_every_png_and_nothing_outside(complete):
    report, _ = complete
    page = report.html.read_text()
    srcs = re.findall(r'<img src="([^"]+)"', page)
    assert sorted(srcs) == sorted(p.name for p in report.plots.values())
    assert all((report.html.parent / s).is_file() for s in srcs)
    assert "http://" not in page and "https://" not in page and "<script" not in page
    summary = report.summary.read_text()
    for path in report.plots.values():
        assert f"({path.name})" in summary  # markdown links to every PNG


def test_summary_method_table_and_gains_from_the_rows_written(complete):
    report, written = complete
    summary = report.summary.read_text()
    runs = written["methods"]
    done = runs[runs["status"] == "TERMINATED"]
    means = {}
    for method in METHODS:
        mine = done[done["method"] == method]
        f1 = mine["test_f1"].to_numpy(float)
        means[method] = np.mean(f1)
        row = next(line for line in summary.splitlines() if line.startswith(f"| {method} |"))
        assert f"| {len(mine)} |" in row
        for m in TEST_METRICS:
            values = mine[f"test_{m}"].to_numpy(float)
            assert f"{np.mean(values):.4f} ± {np.std(values, ddof=1):.4f}" in row, (method, m, row)
    teacher_row = next(line for line in summary.splitlines() if line.startswith("| teacher |"))
    assert f"{written['teacher_test']['f1']:.4f}" in teacher_row
    by_seed = done.pivot_table(index="seed", columns="method", values="test_f1")
    for name, other in (("SKD − KD", "KD"), ("SKD − no-KD", "no-KD")):
        paired = (by_seed["SKD"] - by_seed[other]).dropna()  # the seeds both methods finished
        assert f"{name}: {paired.mean() * 100:+.2f} F1 points (" in summary
    assert "Student's t (95%)" in summary
    assert "Configurations: each method's best trial of its own search, with the same budget: SKD " in summary
    # the other sections, from the files the test wrote
    assert f"H(S|C) = {written['data']['label_bits_train']:.4f} bits" in summary
    assert "class distillation cannot): I_T(S;X|C) = 0.6123 bits per training sample (0-4 0.7000, 5-9 0.5246" in summary
    assert "| digit 5 | 5-9 |" in summary  # subclass counts with their class
    assert "Invented subclass usage" in summary and "| 5-9 | 0.9870 | 1.5850 | 0.2500 |" in summary
    assert f"Trial {written['best_id']}, exported" in summary


def test_text_lists_the_top_trials_best_first_mode_max(complete):
    report, written = complete
    listed = _text_trials(report.text)
    assert [t for t, _ in listed] == _ranking(written["trials"], "val_f1", "max")[:TOP]
    values = [v for _, v in listed]
    assert values == sorted(values, reverse=True)
    assert "SKD − KD: " in report.text and "F1 points" in report.text  # the method table is printed too


def test_text_lists_the_top_trials_best_first_mode_min(tmp_path):
    root = tmp_path / "loss"
    rng = np.random.default_rng(7)
    space = {"w_skd": SPACE["w_skd"]}
    spec = _write_spec(root, {"search": {"metric": "val_loss", "mode": "min", "space": space}})
    written = _write_search(root, spec, rng, ["TERMINATED"] * 5)
    _write_state(root, {"teacher": {"metrics": {"val_f1": 0.9}}})
    report = build_report(root, out_dir=tmp_path / "elsewhere", top=3)
    assert report.html == tmp_path / "elsewhere" / "index.html"
    listed = _text_trials(report.text)
    assert [t for t, _ in listed] == _ranking(written, "val_loss", "min")[:3]
    assert [v for _, v in listed] == sorted(v for _, v in listed)
    assert "top 3 student trials by val_loss (min)" in report.text


def test_importances_rank_the_parameter_that_drives_the_metric_first(complete):
    report, _ = complete
    summary = report.summary.read_text()
    section = summary.split("## Parameter importances")[1].split("\n## ")[0]
    ranked = re.findall(r"^\| (\d+) \| (\S+) \| ([0-9.]+) \|$", section, flags=re.M)
    names = [name for _, name, _ in ranked]
    assert sorted(names) == sorted(SPACE)
    assert names[0] == "w_skd"  # the synthetic objective is 0.55 + 0.4 w_skd + noise
    importance = {name: float(v) for _, name, v in ranked}
    assert importance["w_skd"] > 0.5 > importance["w_kd"]
    assert sum(importance.values()) == pytest.approx(1.0, abs=0.01)


# --------------------------------------------------------------------------------------------------
# A multi-objective search: the Pareto front

OBJECTIVES = [
    {"metric": "val_f1", "mode": "max"},
    {"metric": "params", "mode": "min"},
    {"metric": "latency_ms_b1", "mode": "min"},
]


def _multi_objective(root: Path, seed: int, front_file: bool) -> tuple[Spec, pd.DataFrame]:
    """A search over val_f1, params and latency: costs that grow with w_skd (as F1 does), one column
    each in the trials table; results/pareto.parquet written by pareto.py when `front_file`."""
    from skd_tune.pareto import pareto_front

    rng = np.random.default_rng(seed)
    spec = _write_spec(root, {"methods": {"seeds": 0}, "search": {"num_samples": 16, "objectives": OBJECTIVES}})
    _write_search(root, spec, rng, ["TERMINATED"] * 14 + ["RUNNING", "ERROR"])
    exp = Experiment.existing(root)
    trials = exp.trials("student")
    size = 1.0 + 4 * trials["w_skd"].to_numpy(float) * rng.uniform(0.7, 1.3, len(trials))
    trials["params"] = (1000 * size).astype(int)
    trials["latency_ms_b1"] = 0.2 * size * rng.uniform(0.8, 1.2, len(trials))
    write_table_atomic(trials, exp.path("results/trials.parquet"))
    front = pareto_front(trials, spec.search.objectives)
    if front_file:
        exp.write_result("pareto", front)
    _write_state(root, {"student": {"trials": 16, "errored": 1, "pareto_front": len(front)}} if front_file else {})
    return spec, front


def _section(summary: str, title: str) -> str:
    return summary.split(f"## {title}")[1].split("\n## ")[0]


def test_pareto_section_and_plots_of_a_multi_objective_search(tmp_path):
    root = tmp_path / "pareto"
    _, front = _multi_objective(root, seed=11, front_file=True)
    assert 2 <= len(front) < 14  # a real trade-off, with dominated trials
    report = build_report(root)
    summary = report.summary.read_text()
    section = _section(summary, "Pareto front: val_f1 max, params min, latency_ms_b1 min")
    assert f"{len(front)} on the front, from results/pareto.parquet, sorted by params, latency_ms_b1." in section
    assert re.search(r"ASHA stopped \d+ trial\(s\) early on val_f1 alone; they are not on the front", section)
    rows = re.findall(r"^\| ([0-9a-f]{8}) \| ([0-9.]+) \| (\d+) \| ([0-9.]+) \| (\d+/\d+) \|", section, flags=re.M)
    assert [r[0] for r in rows] == list(front["trial_id"])  # the front's rows, cheapest first
    assert [int(r[2]) for r in rows] == list(front["params"]) and all(r[4] == "6/6" for r in rows)
    assert [float(r[1]) for r in rows] == [round(v, 4) for v in front["best_val_f1"]]
    for key in ("pareto_params", "pareto_latency_ms_b1"):
        path = report.plots[key]
        with Image.open(path) as img:
            width, height = img.size
            colours = img.convert("RGB").getcolors(maxcolors=width * height)
        assert width >= 300 and height >= 200 and len(colours) > 20
        assert f"({path.name})" in section and f'<img src="{path.name}"' in report.html.read_text()
    assert "the star: the best trial by val_f1 alone (the one exported)" in section


def test_pareto_section_mid_run_and_none_without_objectives(tmp_path, complete):
    root = tmp_path / "midrun-pareto"
    _, front = _multi_objective(root, seed=12, front_file=False)
    summary = build_report(root).summary.read_text()
    section = _section(summary, "Pareto front")
    assert (
        f"{len(front)} on the front, so far, from results/trials.parquet (results/pareto.parquet is written when "
        "the student search ends)" in section
    )
    report, _ = complete  # one objective: no section, no plot
    assert "Pareto" not in report.summary.read_text() and not [k for k in report.plots if k.startswith("pareto")]


# --------------------------------------------------------------------------------------------------
# Mid-run


def test_mid_search_without_method_stage_or_export(tmp_path):
    root = tmp_path / "midrun"
    rng = np.random.default_rng(3)
    space = {"temperature": SPACE["temperature"], "curriculum.pacing": SPACE["curriculum.pacing"]}
    spec = _write_spec(root, {"search": {"num_samples": 10, "space": space}})
    written = _write_search(root, spec, rng, ["TERMINATED", "TERMINATED", "RUNNING", "RUNNING"])
    _write_state(
        root, {"teacher": {"metrics": {"epoch": 3, "val_f1": 0.9}}, "teacher_logits": {"test_metrics": _metrics(rng)}}
    )
    report = build_report(root)
    assert "The method stage has not run yet" in report.text
    assert [t for t, _ in _text_trials(report.text)] == _ranking(written, "val_f1", "max")
    assert "RUNNING" in report.text
    summary = report.summary.read_text()
    assert "2/10 terminated, 2 running, 6 pending" in summary
    assert "need at least 3 finished trials; 2 finished so far" in summary
    assert "No student is exported yet" in summary
    assert "importances" not in report.plots and "methods" not in report.plots
    assert {"learning_curves", "history"} <= set(report.plots)
    assert all(p.is_file() for p in report.plots.values())


@pytest.mark.parametrize("stage", ["nothing", "teacher training", "teacher done"])
def test_early_experiments_build(tmp_path, stage):
    root = tmp_path / "early"
    rng = np.random.default_rng(5)
    spec = _write_spec(root, {})
    _write_state(root, {})
    if stage == "teacher training":
        _write_search(root, spec, rng, ["RUNNING"], table="teacher", space={})
    if stage == "teacher done":
        _write_state(
            root,
            {"teacher": {"metrics": {"epoch": 3, "val_f1": 0.91}}, "teacher_logits": {"test_metrics": _metrics(rng)}},
        )
        (root / "results").mkdir()
        (root / "results" / "data.json").write_text(json.dumps(_data_json(rng)))
    report = build_report(root)
    summary = report.summary.read_text()
    for text in (report.text, summary):
        assert "No student trial has reported yet" in text
        assert "The method stage has not run yet" in text
    expect = {
        "nothing": "The teacher has not reported an epoch yet",
        "teacher training": "The teacher is still training: 2/6 epochs so far",
        "teacher done": "| validation (epoch 3) | 0.9100 |",
    }[stage]
    assert expect in summary
    assert ("results/data.json is not written yet" in summary) == (stage != "teacher done")
    assert set(report.plots) == ({"subclass_counts"} if stage == "teacher done" else set())
    assert report.html.read_text().count("<img") == len(report.plots)


def test_a_spec_whose_data_root_is_elsewhere_still_reports(tmp_path):
    """A moved MHIST experiment: data.root is relative to another working directory; the report needs no data."""
    root = tmp_path / "moved"
    _write_spec(root, {})
    raw = yaml.safe_load((root / "spec.yaml").read_text())
    raw["data"] |= {"source": "mhist", "root": str(tmp_path / "gone"), "subclasses": "agreement"}
    (root / "spec.yaml").write_text(yaml.safe_dump(raw))
    _write_state(root, {})
    report = build_report(root)
    assert "No student trial has reported yet" in report.text


def test_an_experiment_object_reports_into_its_report_dir(tmp_path):
    """build_report takes an opened Experiment as well as a path; the default output is its report directory."""
    root = tmp_path / "opened"
    spec = _write_spec(root, {})
    _write_search(root, spec, np.random.default_rng(2), ["TERMINATED"] * 2)
    _write_state(root, {})
    exp = Experiment.existing(root)
    report = build_report(exp, top=1)
    assert report.html == exp.report_dir / "index.html" and report.summary.parent == exp.report_dir
    assert len(_text_trials(report.text)) == 1


# --------------------------------------------------------------------------------------------------
# Errors a user can meet


def test_not_an_experiment_messages(tmp_path):
    with pytest.raises(NotAnExperiment, match=r"missing: no such directory\. Give the directory of an experiment"):
        build_report(tmp_path / "missing")
    (tmp_path / "plain").mkdir()
    with pytest.raises(NotAnExperiment, match=r"plain: not an skd-tune experiment \(it has no spec\.yaml\)"):
        build_report(tmp_path / "plain")
    root = tmp_path / "badstate"
    _write_spec(root, {})
    (root / "state.json").write_text('{"stages": ')
    with pytest.raises(NotAnExperiment, match=r"state\.json: not valid JSON .*Delete it and run `skd-tune run"):
        build_report(root)


def _damaged(tmp_path: Path) -> Path:
    root = tmp_path / "damaged"
    spec = _write_spec(root, {})
    _write_search(root, spec, np.random.default_rng(0), ["TERMINATED"] * 2)
    _write_state(root, {})
    path = root / "results" / "trials.parquet"
    path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])  # cut short, as a full disk leaves it
    return root


def test_damaged_parquet_names_the_file_and_the_fix(tmp_path):
    root = _damaged(tmp_path)
    with pytest.raises(
        ResultsError, match=r"trials\.parquet: not a readable Parquet file .*move it aside and resume the run"
    ):
        build_report(root)
    assert not (root / "report" / "index.html").exists()


def test_cli_exits_2_with_one_paragraph(tmp_path):
    damaged = _damaged(tmp_path)
    cases = {"missing": tmp_path / "nowhere", "damaged": damaged}
    with ThreadPoolExecutor(2) as pool:  # two interpreters start in parallel: half the wall time
        done = dict(
            zip(cases, pool.map(lambda p: run_cli("report", str(p), cwd=tmp_path, timeout=120), cases.values()))
        )
    for name, proc in done.items():
        assert proc.returncode == 2, (name, proc.stderr)
        err = proc.stderr.strip()
        assert "Traceback" not in err and err.startswith("error: ") and "\n" not in err, (name, err)
        assert proc.stdout == ""
    assert "nowhere: no such directory" in done["missing"].stderr
    assert "trials.parquet: not a readable Parquet file" in done["damaged"].stderr


# --------------------------------------------------------------------------------------------------
# In a browser


def _chromium() -> str:
    path = shutil.which("chromium") or ("/usr/bin/chromium" if os.path.exists("/usr/bin/chromium") else None)
    if path is None:
        message = "Chromium is not installed (no `chromium` on PATH, no /usr/bin/chromium)"
        if os.environ.get("SKD_REQUIRE_BROWSER") == "1":
            pytest.fail(f"{message}, and SKD_REQUIRE_BROWSER=1 says this test must run: apt-get install chromium")
        pytest.skip(f"{message}; set SKD_REQUIRE_BROWSER=1 to make this a failure")
    return path


def test_report_renders_in_headless_chromium(complete):
    report, _ = complete
    executable = _chromium()
    from playwright.sync_api import sync_playwright

    args = [
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
    ]
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=executable, headless=True, args=args)
        try:
            page = browser.new_page()
            page.goto(report.html.resolve().as_uri(), wait_until="load")
            images = page.eval_on_selector_all(
                "img", "els => els.map(e => [e.getAttribute('src'), e.complete, e.naturalWidth])"
            )
            text = page.inner_text("body")
        finally:
            browser.close()
    assert sorted(src for src, _, _ in images) == sorted(p.name for p in report.plots.values())
    assert all(complete_ and width > 0 for _, complete_, width in images), images
    table_text = text.split("Methods: no-KD, KD and SKD")[1]
    for method in (*METHODS, "teacher"):
        assert re.search(rf"^{re.escape(method)}\t", table_text, flags=re.M), method
