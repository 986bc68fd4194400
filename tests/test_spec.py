"""The spec: the shipped specs load, and every kind of mistake gets one clear paragraph and exit code 2."""

from __future__ import annotations

import math
import re
import subprocess
import sys

import pytest
import yaml

from skd_tune.cli import main
from skd_tune.spec import Spec, SpecError, load_spec, spec_hash, validate_spec

from .conftest import REPO, TINY_SPEC, deep_update, run_cli


@pytest.mark.parametrize("path", sorted((REPO / "search_spaces").glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_specs_are_valid(path, tmp_path, monkeypatch):
    raw = yaml.safe_load(path.read_text())
    if raw.get("data", {}).get("root"):  # a dataset on disk: give it a small synthetic one in its place
        from skd_tune.data.synth import write_synthetic_mhist

        monkeypatch.chdir(tmp_path)
        write_synthetic_mhist(tmp_path / raw["data"]["root"], n=24, seed=0, size=16)
    spec = load_spec(path)
    assert spec.search.num_samples >= 1
    # every searched key is applied to the student spec with the first value of its range
    params = {k: d.values_to_check()[0] for k, d in spec.search.space.items()}
    student = spec.student_for(params).model_dump()
    for key, value in params.items():
        node = student
        for part in key.split("."):
            node = node[part]
        assert node == value


def test_invented_subclasses_spec():
    spec = Spec.model_validate(
        deep_update(
            TINY_SPEC,
            {
                "data": {"subclasses": "invented", "subclasses_per_class": 4},
                "search": {"teacher": {"num_samples": 2, "space": {"beta": {"uniform": [0.5, 2]}}}},
            },
        )
    )
    assert spec.data.invented and spec.data.outputs_per_group == 4 and spec.data.subclass_scheme == "known"
    assert spec.teacher_for({"beta": 0.7}).beta == 0.7 and spec.teacher_for({}).beta == spec.teacher.beta
    known = Spec.model_validate(deep_update(TINY_SPEC, {"data": {"outputs_per_subclass": 3}}))
    assert not known.data.invented and known.data.outputs_per_group == 3


def test_defaults_and_hash_are_stable():
    a = Spec.model_validate(TINY_SPEC)
    b = Spec.model_validate(deep_update(TINY_SPEC, {}))
    assert spec_hash(a) == spec_hash(b)
    c = Spec.model_validate(deep_update(TINY_SPEC, {"student": {"epochs": 4}}))
    assert spec_hash(a) != spec_hash(c)


F1_MAX, PARAMS_MIN = {"metric": "val_f1", "mode": "max"}, {"metric": "params", "mode": "min"}

# (id, changes applied to TINY_SPEC, text expected in the message: the field's dotted path and the fix)
BAD = [
    ("unknown-top-key", {"nmae": "x"}, r"nmae: unknown key; valid keys here: name, storage"),
    ("unknown-nested-key", {"student": {"modle": "mlp"}}, r"student\.modle: unknown key; valid keys here: model"),
    (
        "unknown-deep-key",
        {"student": {"resources": {"gpus": 1}}},
        r"student\.resources\.gpus: unknown key; valid keys here: cpu, gpu",
    ),
    ("unknown-scheduler-key", {"search": {"scheduler": {"grace": 1}}}, r"search\.scheduler\.grace: unknown key"),
    ("wrong-type-epochs", {"student": {"epochs": "many"}}, r"student\.epochs: must be a valid integer.*got 'many'"),
    ("wrong-type-lr", {"teacher": {"lr": [1, 2]}}, r"teacher\.lr: must be a valid number"),
    ("negative-epochs", {"teacher": {"epochs": -3}}, r"teacher\.epochs: must be >= 1, got -3"),
    ("zero-batch", {"student": {"batch_size": 0}}, r"student\.batch_size: must be >= 1, got 0"),
    ("negative-temperature", {"student": {"temperature": -1}}, r"student\.temperature: must be > 0, got -1"),
    ("num-samples-zero", {"search": {"num_samples": 0}}, r"search\.num_samples: must be >= 1, got 0"),
    ("max-concurrent-zero", {"search": {"max_concurrent": 0}}, r"search\.max_concurrent: must be >= 1"),
    ("gpu-fraction-negative", {"student": {"resources": {"gpu": -0.5}}}, r"student\.resources\.gpu: must be >= 0"),
    (
        "gpu-fraction-over-one",
        {"student": {"resources": {"gpu": 1.5}}},
        r"student\.resources\.gpu: must be a fraction in \[0, 1\] or a whole number",
    ),
    ("cpu-zero", {"teacher": {"resources": {"cpu": 0}}}, r"teacher\.resources\.cpu: must be > 0"),
    (
        "unknown-model",
        {"student": {"model": "resnet9000"}},
        r"student\.model: unknown model 'resnet9000'; available: .*mlp.*resnet18",
    ),
    ("unknown-teacher-model", {"teacher": {"model": "vit"}}, r"teacher\.model: unknown model 'vit'"),
    (
        "unknown-sampler",
        {"search": {"sampler": "grid"}},
        r"search\.sampler: unknown sampler 'grid'; available: tpe, cmaes, random, nsga2",
    ),
    (
        "unknown-scheduler",
        {"search": {"scheduler": {"name": "pbt"}}},
        r"search\.scheduler\.name: unknown scheduler 'pbt'; available: asha, fifo",
    ),
    (
        "unknown-source",
        {"data": {"source": "mnist"}},
        r"data\.source: unknown dataset source 'mnist'; available: digits",
    ),
    (
        "unknown-metric",
        {"search": {"metric": "val_mcc"}},
        r"search\.metric: unknown metric 'val_mcc'; the student trials report: val_f1",
    ),
    ("bad-mode", {"search": {"mode": "maximise"}}, r"search\.mode: must be one of 'max' or 'min'"),
    ("data-path-required", {"data": {"source": "npz"}}, r"data\.root is required for source 'npz'"),
    (
        "loguniform-low-zero",
        {"search": {"space": {"temperature": {"loguniform": [0, 5]}}}},
        r"search\.space\.temperature: loguniform: low must be > 0",
    ),
    (
        "low-above-high",
        {"search": {"space": {"w_skd": {"uniform": [0.8, 0.2]}}}},
        r"search\.space\.w_skd: uniform: low must be <= high, got \[0\.8, 0\.2\]",
    ),
    (
        "empty-choice",
        {"search": {"space": {"lr": {"choice": []}}}},
        r"search\.space\.lr: choice: must list at least one value",
    ),
    (
        "two-kinds",
        {"search": {"space": {"lr": {"uniform": [0.1, 0.2], "loguniform": [0.1, 0.2]}}}},
        r"search\.space\.lr: give exactly one of",
    ),
    (
        "unknown-dist",
        {"search": {"space": {"lr": {"normal": [0, 1]}}}},
        r"search\.space\.lr\.normal: unknown key; valid keys here: uniform, loguniform, int, choice",
    ),
    (
        "unknown-param",
        {"search": {"space": {"gamma": {"uniform": [0, 1]}}}},
        r"search\.space\.gamma: not a parameter the student trainable knows; searchable: temperature",
    ),
    (
        "temperature-bound-invalid",
        {"search": {"space": {"temperature": {"uniform": [-2, 5]}}}},
        r"search\.space\.temperature: uniform value -2(\.0)? is not a valid student\.temperature: must be > 0",
    ),
    (
        "weight-bound-invalid",
        {"search": {"space": {"w_kd": {"uniform": [-1, 1]}}}},
        r"search\.space\.w_kd: uniform value -1(\.0)? is not a valid student\.w_kd: must be >= 0",
    ),
    ("bad-name", {"name": "my run/1"}, r"name: must match"),
    ("val-fraction", {"data": {"val_fraction": 0.9}}, r"data\.val_fraction: must be < 0\.5"),
    (
        "unknown-pacing",
        {"student": {"curriculum": {"pacing": "cosine"}}},
        r"student\.curriculum\.pacing: unknown pacing 'cosine'; available: none, linear, root, step, exponential",
    ),
    (
        "curriculum-start-zero",
        {"student": {"curriculum": {"start": 0}}},
        r"student\.curriculum\.start: must be > 0, got 0",
    ),
    (
        "searched-pacing-invalid",
        {"search": {"space": {"curriculum.pacing": {"choice": ["linear", "cosine"]}}}},
        r"search\.space\.curriculum\.pacing: choice value 'cosine' is not a valid student\.curriculum\.pacing",
    ),
    (
        "subclass-scheme",
        {"data": {"subclasses": "agreement"}},
        r"data\.subclasses: 'agreement' is not a subclass scheme of source 'digits'; available: known, invented, clustered\.",
    ),
    ("max-failures", {"search": {"max_failures": -1}}, r"search\.max_failures: must be >= 0"),
    (
        "checkpoint-interval",
        {"search": {"checkpoint_interval_s": -5}},
        r"search\.checkpoint_interval_s: must be >= 0, got -5",
    ),
    (
        "invented-without-k",
        {"data": {"subclasses": "invented"}},
        r"data\.subclasses_per_class: required with data\.subclasses: invented",
    ),
    (
        "k-without-invented",
        {"data": {"subclasses_per_class": 3}},
        r"data\.subclasses_per_class: only with data\.subclasses: invented or clustered \(got subclasses: 'known'\).*outputs_per_subclass",
    ),
    (
        "outputs-with-invented",
        {"data": {"subclasses": "invented", "subclasses_per_class": 2, "outputs_per_subclass": 2}},
        r"data\.outputs_per_subclass: only for known subclasses",
    ),
    (
        "k-zero",
        {"data": {"subclasses": "invented", "subclasses_per_class": 0}},
        r"data\.subclasses_per_class: must be >= 1, got 0",
    ),
    ("beta-negative", {"teacher": {"beta": -1}}, r"teacher\.beta: must be >= 0, got -1"),
    ("t-aux-zero", {"teacher": {"t_aux": 0}}, r"teacher\.t_aux: must be > 0, got 0"),
    (
        "teacher-samples-without-space",
        {"search": {"teacher": {"num_samples": 3}}},
        r"search\.teacher: num_samples: 3 teacher trials need a search\.teacher\.space",
    ),
    (
        "teacher-space-unknown",
        {"search": {"teacher": {"space": {"temperature": {"uniform": [1, 2]}}}}},
        r"search\.teacher\.space\.temperature: not a parameter the teacher trainable knows; searchable: beta, t_aux, lr",
    ),
    (
        "teacher-space-invalid",
        {"search": {"teacher": {"space": {"beta": {"uniform": [-1, 2]}}}}},
        r"search\.teacher\.space\.beta: uniform value -1(\.0)? is not a valid teacher\.beta: must be >= 0",
    ),
    (
        "objective-unknown-metric",
        {"search": {"objectives": [F1_MAX, {"metric": "flops", "mode": "min"}]}},
        r"search\.objectives\.1\.metric: unknown objective metric 'flops'; available: val_f1, val_accuracy, val_auc, "
        r"val_loss, params, macs, latency_ms_b1, latency_ms_b64, weights_bytes \(validation metrics: ",
    ),
    (
        "objective-mode-missing",
        {"search": {"objectives": [F1_MAX, {"metric": "params"}]}},
        r"search\.objectives\.1\.mode: required, missing",
    ),
    (
        "objective-bad-mode",
        {"search": {"objectives": [F1_MAX, {"metric": "params", "mode": "smallest"}]}},
        r"search\.objectives\.1\.mode: must be one of 'max' or 'min', got 'smallest'",
    ),
    (
        "objective-unknown-key",
        {"search": {"objectives": [F1_MAX, {"metric": "params", "direction": "min"}]}},
        r"search\.objectives\.1\.direction: unknown key; valid keys here: metric, mode",
    ),
    (
        "objectives-not-a-list",
        {"search": {"objectives": "val_f1"}},
        r"search\.objectives: must be a list, got 'val_f1'",
    ),
    (
        "one-objective",
        {"search": {"objectives": [F1_MAX]}},
        r"search: search\.objectives lists 1 objective \(val_f1 max\); a multi-objective search needs at least 2, e\.g\. "
        r"add \{metric: params, mode: min\}; for a single objective, remove search\.objectives and set search\.metric",
    ),
    (
        "objective-twice",
        {"search": {"objectives": [F1_MAX, PARAMS_MIN, {"metric": "params", "mode": "max"}]}},
        r"search: search\.objectives lists params more than once \(val_f1 max, params min, params max\); list each "
        r"metric once",
    ),
    (
        "objective-cost-first",
        {"search": {"objectives": [PARAMS_MIN, F1_MAX]}},
        r"search: the first of search\.objectives must be a validation metric \(val_f1, val_accuracy, val_auc, "
        r"val_loss\), got params: ASHA stops trials on it and the best trial is the best by it; put a validation",
    ),
    (
        "objective-metric-differs",
        {"search": {"objectives": [{"metric": "val_loss", "mode": "min"}, PARAMS_MIN]}},
        r"search: search\.metric and search\.mode \(val_f1 max\) differ from the first objective \(val_loss min\), "
        r"which sets them: leave search\.metric and search\.mode out, or make them equal to it",
    ),
    (
        "objective-mode-differs",
        {"search": {"mode": "min", "objectives": [F1_MAX, PARAMS_MIN]}},
        r"search: search\.metric and search\.mode \(val_f1 min\) differ from the first objective \(val_f1 max\)",
    ),
    (
        "cmaes-with-objectives",
        {"search": {"sampler": "cmaes", "objectives": [F1_MAX, PARAMS_MIN]}},
        r"search: sampler cmaes optimises a single objective, but search\.objectives lists 2 \(val_f1 max, params "
        r"min\); use sampler: nsga2 or tpe, or remove search\.objectives",
    ),
    (
        "nsga2-without-objectives",
        {"search": {"sampler": "nsga2"}},
        r"search: sampler nsga2 is for a multi-objective search, but search\.objectives is empty \(one objective: "
        r"search\.metric val_f1\); list the objectives, e\.g\. objectives: \[\{metric: val_f1, mode: max\}, "
        r"\{metric: params, mode: min\}\], or use sampler: tpe",
    ),
]


@pytest.mark.parametrize("case_id,changes,pattern", BAD, ids=[b[0] for b in BAD])
def test_bad_spec_one_paragraph_exit_2(case_id, changes, pattern, write_spec, capsys):
    path = write_spec(changes)
    with pytest.raises(SpecError, match=pattern):
        load_spec(path)
    assert main(["run", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {path}: ")
    assert "Traceback" not in err
    assert len(err.strip().splitlines()) == 1  # one paragraph


def test_objectives_set_the_search_metric_and_round_trip():
    """The first objective sets search.metric and search.mode when they are left out; the frozen spec
    (model_dump) validates again to the same spec and hash; tpe, random and nsga2 take objectives."""
    raw = deep_update(TINY_SPEC, {})
    del raw["search"]["metric"], raw["search"]["mode"]
    raw["search"]["objectives"] = [{"metric": "val_loss", "mode": "min"}, PARAMS_MIN, {"metric": "macs", "mode": "min"}]
    spec = Spec.model_validate(raw)
    assert (spec.search.metric, spec.search.mode) == ("val_loss", "min")
    assert [(o.metric, o.mode, o.is_cost) for o in spec.search.objectives] == [
        ("val_loss", "min", False),
        ("params", "min", True),
        ("macs", "min", True),
    ]
    frozen = Spec.model_validate(yaml.safe_load(yaml.safe_dump(spec.model_dump(mode="json"))))
    assert frozen == spec and spec_hash(frozen) == spec_hash(spec)
    assert spec_hash(spec) != spec_hash(Spec.model_validate(TINY_SPEC))
    assert Spec.model_validate(TINY_SPEC).search.objectives == ()  # the default: one objective
    for sampler in ("tpe", "random", "nsga2"):
        both = {"sampler": sampler, "objectives": [F1_MAX, PARAMS_MIN]}
        assert Spec.model_validate(deep_update(TINY_SPEC, {"search": both})).search.sampler == sampler


def test_every_mistake_reported_in_one_pass(write_spec):
    path = write_spec({"student": {"temperature": -1, "modle": "x"}, "search": {"sampler": "grid", "num_samples": 0}})
    with pytest.raises(SpecError) as info:
        load_spec(path)
    assert len(info.value.problems) == 4
    assert "4 problems" in str(info.value)


@pytest.mark.parametrize(
    "text,pattern",
    [
        ("name: x\nstudent:\n  epochs: [1\n", r"line 4, column 1: YAML syntax error"),
        ("name: x\n  student: 3\n", r"line 2, column 10: YAML syntax error"),
        ("- just\n- a list\n", r"the top level must be a mapping"),
        ("name: x\nstudent: !!python/object/apply:os.system ['true']\n", r"YAML syntax error"),
    ],
    ids=["unclosed-bracket", "bad-indent", "not-a-mapping", "python-tag-refused"],
)
def test_yaml_errors(tmp_path, text, pattern):
    path = tmp_path / "s.yaml"
    path.write_text(text)
    with pytest.raises(SpecError, match=pattern):
        load_spec(path)


def test_missing_data_root_is_the_loader_s_error_and_nothing_is_written(write_spec, tmp_path, capsys, monkeypatch):
    # The spec does no I/O: a data.root that does not exist is valid there, and refused by the data loader
    # before the experiment directory is created.
    monkeypatch.chdir(tmp_path)
    path = write_spec({"data": {"source": "npz", "root": "no/such/file.npz"}})
    assert load_spec(path).data.root == "no/such/file.npz"
    assert main(["run", str(path)]) == 2
    err = capsys.readouterr().err
    assert re.search(
        r"^error: data\.root: path 'no/such/file\.npz' does not exist .*point it at the dataset$", err.strip()
    )
    assert not (tmp_path / "runs").exists()


def test_empty_spec_file_says_so(tmp_path, capsys):
    path = tmp_path / "empty.yaml"
    path.write_text("# nothing here yet\n")
    with pytest.raises(SpecError, match=r"empty\.yaml: 1 problem in the spec: the spec file is empty\. Write the spec"):
        load_spec(path)
    assert main(["run", str(path)]) == 2
    assert "the spec file is empty" in capsys.readouterr().err


def test_missing_spec_file(tmp_path, capsys):
    assert main(["run", str(tmp_path / "nope.yaml")]) == 2
    assert "file not found" in capsys.readouterr().err


def test_cli_subprocess_exit_code_and_no_traceback(write_spec, tmp_path):
    path = write_spec({"student": {"temperature": 0}})
    proc = run_cli("run", str(path), cwd=tmp_path, timeout=120)
    assert proc.returncode == 2
    assert "student.temperature: must be > 0, got 0" in proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
    assert not (tmp_path / "runs").exists()  # nothing is created for a spec that does not validate


def test_help_lists_run(tmp_path):
    proc = run_cli("--help", cwd=tmp_path, timeout=60)
    assert proc.returncode == 0 and "run" in proc.stdout


def test_int_and_choice_distributions_parse(write_spec):
    spec = load_spec(
        write_spec(
            {
                "search": {
                    "space": {"batch_size": {"int": [32, 128]}, "curriculum.pacing": {"choice": ["none", "linear"]}}
                }
            }
        )
    )
    assert spec.search.space["batch_size"].int == (32, 128)
    assert spec.search.space["curriculum.pacing"].choice == ["none", "linear"]
    assert spec.student_for({"batch_size": 64, "curriculum.pacing": "linear"}).curriculum.pacing == "linear"


@pytest.mark.parametrize("grace,rf,epochs", [(1, 2, 3), (3, 3, 20), (3, 3, 27), (5, 3, 50), (2, 1.5, 12), (4, 4, 4)])
def test_decision_epochs_are_ashas_rungs(write_spec, grace, rf, epochs):
    """The epochs a trial must checkpoint an unsaved best at are the ones Ray's ASHA decides at."""
    from ray.tune.schedulers import ASHAScheduler

    spec = load_spec(
        write_spec(
            {
                "search": {"scheduler": {"name": "asha", "grace_period": grace, "reduction_factor": rf}},
                "student": {"epochs": epochs},
            }
        )
    )
    asha = ASHAScheduler(
        time_attr="training_iteration", max_t=epochs, grace_period=min(grace, epochs), reduction_factor=rf
    )
    rungs = {math.ceil(m) for m, _ in asha._brackets[0]._rungs if m < epochs}  # Ray's own milestones
    assert spec.search.decision_epochs(epochs) == rungs
    fifo = load_spec(write_spec({"search": {"scheduler": {"name": "fifo"}}}))
    assert fifo.search.decision_epochs(20) == frozenset()


def test_importing_the_spec_loads_no_engine():
    """The spec is the edge every command crosses first: importing it must not load torch, sklearn or Ray
    (class-level defaults built at import time once pulled them in through the registries' validators)."""
    code = (
        "import sys, skd_tune.spec; print(sorted(m for m in ('torch', 'sklearn', 'ray', 'optuna') if m in sys.modules))"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


# ---------------------------------------------------------------------------------------------------
# data.subclasses as a grouping of MHIST's SSA vote counts
# ---------------------------------------------------------------------------------------------------

MHIST_DATA = {"source": "mhist", "root": "mhist"}
GROUPING = {"HP": [[0], [1], [2, 3]], "SSA": [[4, 5], [6], [7]]}


def test_vote_grouping_parses(write_spec):
    spec = load_spec(write_spec({"data": {**MHIST_DATA, "subclasses": GROUPING}}))
    assert spec.data.subclass_scheme == "votes" and not spec.data.invented
    assert spec.data.vote_groups == {"HP": ((0,), (1,), (2, 3)), "SSA": ((4, 5), (6,), (7,))}
    assert spec.data.model_dump()["subclasses"] == GROUPING  # dumped as written: the frozen spec round-trips
    assert Spec.model_validate(spec.model_dump(mode="json")) == spec
    hash(spec.data)  # the data spec stays hashable (the grouping is held as tuples)
    # The class order of the mapping and the order of votes within a group do not matter; the groups' order does.
    swapped = load_spec(
        write_spec({"data": {**MHIST_DATA, "subclasses": {"SSA": [[5, 4], [6], [7]], "HP": GROUPING["HP"]}}})
    )
    assert spec_hash(swapped) == spec_hash(spec) and hash(swapped.data) == hash(spec.data)
    other = load_spec(write_spec({"data": {**MHIST_DATA, "subclasses": {**GROUPING, "HP": [[2, 3], [0], [1]]}}}))
    agreement = load_spec(write_spec({"data": {**MHIST_DATA, "subclasses": "agreement"}}))
    assert len({spec_hash(spec), spec_hash(other), spec_hash(agreement)}) == 3
    assert agreement.data.vote_groups is None and agreement.data.subclass_scheme == "agreement"
    invented = load_spec(write_spec({"data": {**MHIST_DATA, "subclasses": "invented", "subclasses_per_class": 2}}))
    assert invented.data.vote_groups is None and invented.data.subclass_scheme == "agreement"


_HP_FIX = r"; each of HP's vote counts 0-3 must be in exactly one group"
_SSA_FIX = r"; each of SSA's vote counts 4-7 must be in exactly one group"

# (id, data.subclasses, or (data.source, data.subclasses), the expected message after "data.subclasses: ")
BAD_GROUPINGS = [
    (
        "vote-twice",
        {"HP": [[0], [1], [1, 2, 3]], "SSA": [[4, 5, 6, 7]]},
        r"HP \[\[0\], \[1\], \[1, 2, 3\]\]: vote count 1 is used in groups 2 and 3" + _HP_FIX,
    ),
    (
        "vote-twice-in-a-group",
        {"HP": [[0, 1, 2, 3]], "SSA": [[4, 4, 5], [6, 7]]},
        r"SSA \[\[4, 4, 5\], \[6, 7\]\]: vote count 4 is used twice in group 1" + _SSA_FIX,
    ),
    (
        "votes-missing",
        {"HP": [[0], [1]], "SSA": [[4, 5, 6, 7]]},
        r"HP \[\[0\], \[1\]\]: vote counts 2, 3 are in no group" + _HP_FIX,
    ),
    (
        "vote-of-the-other-class",
        {"HP": [[0], [1], [2, 3, 4]], "SSA": [[5], [6], [7]]},
        r"HP \[\[0\], \[1\], \[2, 3, 4\]\]: vote count 4 in group 3 belongs to SSA \(SSA images have 4-7 SSA votes\)"
        + _HP_FIX
        + r"; SSA \[\[5\], \[6\], \[7\]\]: vote count 4 is in no group"
        + _SSA_FIX,
    ),
    (
        "vote-out-of-range",
        {"HP": [[0, 1, 2, 3]], "SSA": [[4, 5], [6], [7, 8]]},
        r"SSA \[\[4, 5\], \[6\], \[7, 8\]\]: vote count 8 in group 3 is out of range: 0-7 of the 7 annotators "
        r"voted SSA" + _SSA_FIX,
    ),
    (
        "vote-negative",
        {"HP": [[-1, 0, 1, 2, 3]], "SSA": [[4, 5, 6, 7]]},
        r"HP \[\[-1, 0, 1, 2, 3\]\]: vote count -1 in group 1 is out of range: 0-7",
    ),
    (
        "vote-not-a-number",
        {"HP": [[0, 1, 2, "3"]], "SSA": [[4, 5, 6, 7]]},
        r"HP \[\[0, 1, 2, '3'\]\]: '3' in group 1 is not a vote count \(a whole number 0-7\), "
        r"vote count 3 is in no group" + _HP_FIX,
    ),
    (
        "empty-group",
        {"HP": [[0], [], [1, 2, 3]], "SSA": [[4, 5, 6, 7]]},
        r"HP \[\[0\], \[\], \[1, 2, 3\]\]: group 2 is empty \(remove it or give it vote counts\)" + _HP_FIX,
    ),
    (
        "no-groups",
        {"HP": [], "SSA": [[4, 5, 6, 7]]},
        r"HP \[\]: must be a non-empty list of groups, each a list of SSA vote counts, e\.g\. HP: \[\[0\], \[1\], \[2, 3\]\]",
    ),
    (
        "flat-list",
        {"HP": [0, 1, 2, 3], "SSA": [[4, 5, 6, 7]]},
        r"HP \[0, 1, 2, 3\]: a list of vote counts, not of groups \(write \[\[0\], \[1\], \[2\], \[3\]\] for a "
        r"subclass each, or \[\[0, 1, 2, 3\]\] for one\)",
    ),
    (
        "unknown-class",
        {"HP": [[0, 1, 2, 3]], "SSA": [[4, 5, 6, 7]], "NP": [[0]]},
        r"unknown class 'NP'; the classes are HP and SSA",
    ),
    (
        "missing-class",
        {"HP": [[0, 1, 2, 3]]},
        r"class SSA is missing: give its groups too, e\.g\. SSA: \[\[4, 5\], \[6\], \[7\]\]",
    ),
    (
        "not-a-mapping",
        [[0, 1, 2, 3], [4, 5, 6, 7]],
        r"must be a subclass scheme name or, for source 'mhist', a mapping of class to groups of SSA vote counts, "
        r"e\.g\. \{HP: \[\[0\], \[1\], \[2, 3\]\], SSA: \[\[4, 5\], \[6\], \[7\]\]\}, got \[\[0, 1, 2, 3\], \[4, 5, 6, 7\]\]",
    ),
    (
        "digits-source",
        ("digits", GROUPING),
        r"a grouping of vote counts is only for source 'mhist' \(it groups MHIST's SSA vote counts 0-7\); "
        r"source 'digits' takes a scheme name: known, invented",
    ),
    ("npz-source", ("npz", GROUPING), r"a grouping of vote counts is only for source 'mhist'.*source 'npz'"),
]


@pytest.mark.parametrize("case_id,subclasses,pattern", BAD_GROUPINGS, ids=[b[0] for b in BAD_GROUPINGS])
def test_bad_vote_grouping(case_id, subclasses, pattern, write_spec):
    source, subclasses = subclasses if isinstance(subclasses, tuple) else ("mhist", subclasses)
    path = write_spec({"data": {"source": source, "root": "data", "subclasses": subclasses}})
    with pytest.raises(SpecError, match=r"spec\.yaml: 1 problem in the spec: data\.subclasses: " + pattern) as info:
        load_spec(path)
    assert info.value.problems == [info.value.problems[0]]


def test_bad_vote_grouping_one_paragraph_exit_2(write_spec, capsys):
    path = write_spec({"data": {**MHIST_DATA, "subclasses": {"HP": [[0], [1], [2, 3, 4]], "SSA": [[5], [6, 7]]}}})
    assert main(["run", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {path}: 1 problem in the spec: data.subclasses: HP [[0], [1], [2, 3, 4]]: ")
    assert "vote count 4 in group 3 belongs to SSA" in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1


def test_every_grouping_mistake_reported_in_one_pass(write_spec):
    """Each class's problems and the other fields' are all listed at once, each naming its class and vote count."""
    bad = {"HP": [[0], [0, 1], [], [9]], "SSA": [[3, 4, 5], [6]], "NP": [[1]]}
    path = write_spec({"data": {**MHIST_DATA, "subclasses": bad}, "student": {"temperature": -1}})
    with pytest.raises(SpecError) as info:
        load_spec(path)
    problems = info.value.problems
    assert len(problems) == 2 and problems[1] == "student.temperature: must be > 0, got -1"
    grouping = problems[0]
    for part in (
        "data.subclasses: unknown class 'NP'; the classes are HP and SSA; ",
        "HP [[0], [0, 1], [], [9]]: vote count 0 is used in groups 1 and 2, group 3 is empty",
        "vote count 9 in group 4 is out of range: 0-7",
        "vote counts 2, 3 are in no group; each of HP's vote counts 0-3",
        "SSA [[3, 4, 5], [6]]: vote count 3 in group 1 belongs to HP (HP images have 0-3 SSA votes), "
        "vote count 7 is in no group; each of SSA's vote counts 4-7",
    ):
        assert part in grouping


def test_unknown_mhist_scheme_names_the_grouping(write_spec):
    with pytest.raises(
        SpecError,
        match=r"data\.subclasses: 'votes' is not a subclass scheme of source 'mhist'; available: agreement, "
        r"unanimous, invented, clustered; or a grouping of SSA vote counts, e\.g\. \{HP: \[\[0\], \[1\], \[2, 3\]\]",
    ):
        load_spec(write_spec({"data": {**MHIST_DATA, "subclasses": "votes"}}))


# ---------------------------------------------------------------------------------------------------
# student.width and a searched student model
# ---------------------------------------------------------------------------------------------------

_TAKE_WIDTH = (
    r"the models that take a width: mlp_tiny, mlp, cnn_tiny, cnn_small, cnn, mobilenet_v3_small, mobilenet_v3_large"
)


def _spec(changes):
    from skd_tune.spec import validate_spec

    return validate_spec(deep_update(TINY_SPEC, changes))


def test_width_and_model_can_be_searched():
    space = {"model": {"choice": ["mlp_tiny", "cnn_small"]}, "width": {"uniform": [0.25, 2.0]}}
    spec = _spec({"search": {"space": space}})
    assert spec.student.width == 1.0  # the default
    student = spec.student_for({"model": "cnn_small", "width": 1.5, "lr": 0.01})
    assert (student.model, student.width, student.lr) == ("cnn_small", 1.5, 0.01)
    # the base student's model does not matter when the search chooses the model
    assert _spec({"student": {"model": "resnet18"}, "search": {"space": space}}).student.model == "resnet18"
    assert _spec({"student": {"model": "cnn", "width": 0.5}}).student.width == 0.5


@pytest.mark.parametrize(
    "changes,pattern",
    [
        (
            {"student": {"model": "resnet18", "width": 2}},
            rf"student\.width: model 'resnet18' takes no width \(width must be 1, got 2\); {_TAKE_WIDTH}",
        ),
        (
            {"student": {"model": "resnet18"}, "search": {"space": {"width": {"uniform": [0.5, 2.0]}}}},
            r"search\.space\.width: uniform value 0\.5 is not a valid student\.width: model 'resnet18' takes no width",
        ),
        (
            {"search": {"space": {"model": {"choice": ["mlp_tiny", "vgg"]}}}},
            r"search\.space\.model: choice value 'vgg' is not a valid student\.model: unknown model 'vgg'; available: ",
        ),
        (
            {"search": {"space": {"model": {"choice": ["mlp", "resnet34"]}, "width": {"uniform": [0.5, 1.0]}}}},
            rf"search\.space\.model: choice 'resnet34' takes no width, but search\.space\.width may be 0\.5; {_TAKE_WIDTH}",
        ),
        (
            {"student": {"width": 2}, "search": {"space": {"model": {"choice": ["mlp", "efficientnet_b0"]}}}},
            r"search\.space\.model: choice 'efficientnet_b0' takes no width, but student\.width is 2; ",
        ),
        (
            {"student": {"model": "mobilenet_v3_small", "pretrained": True, "width": 0.5}},
            r"student\.width: pretrained weights exist only at width 1, got 0\.5",
        ),
        ({"student": {"width": 0}}, r"student\.width: must be > 0, got 0"),
        ({"search": {"space": {"width": {"uniform": [0.5, 32]}}}}, r"search\.space\.width: .*must be <= 16"),
    ],
    ids=[
        "fixed",
        "width-range",
        "bad-model-choice",
        "both-searched",
        "model-choice-fixed-width",
        "pretrained",
        "zero",
        "too-wide",
    ],  # fmt: skip
)
def test_bad_width_or_model_search(changes, pattern):
    with pytest.raises(SpecError, match=pattern) as info:
        _spec(changes)
    assert len(info.value.problems) <= 2  # both bounds of a range at most, nothing else


def test_importing_the_width_check_loads_no_engine():
    code = (
        "import sys; from skd_tune.spec import Spec; "
        "Spec.model_validate({'name': 'x', 'student': {'model': 'cnn', 'width': 2}}); "
        "print(sorted(m for m in ('torch', 'torchvision') if m in sys.modules))"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


def test_methods_point_is_a_cost_budget():
    assert validate_spec({"name": "x", "methods": {"point": "params<=20000"}}).methods.point == "params<=20000"
    assert validate_spec({"name": "x", "methods": {"point": " latency_ms_b1 < 0.5 "}}).methods.point
    with pytest.raises(
        SpecError, match=r"methods\.point: budget on 'val_f1': the point is chosen by a cost; costs: params"
    ):
        validate_spec({"name": "x", "methods": {"point": "val_f1>=0.9"}})
    with pytest.raises(SpecError, match=r"methods\.point: 'params about 2' is not a budget; write COLUMN<=VALUE"):
        validate_spec({"name": "x", "methods": {"point": "params about 2"}})
