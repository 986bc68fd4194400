"""The names of the files and directories of an experiment: the only place that spells them.

<storage>/<name>/
  spec.yaml                 the frozen spec (its hash is in state.json)
  state.json                stages started and done (`state.State`)
  teacher/ student/ final/  the Ray Tune experiments of the Tune stages (student_kd/, student_nokd/:
                            the searches of KD and no-KD with methods.search: per_method)
  teacher_logits/           {train,val,test}.npy: the frozen teacher's logits (derived: rebuilt when damaged);
                            clusters.npz: with data.subclasses: clustered, the k-means centroids and tau the
                            subclass logits were built with (kept when the logits are rebuilt)
  results/                  the Parquet tables and their journals, data.json, subclasses.json
  export/                   the best student (model.pt + meta.json)
  optuna/                   <stage>.log: the Optuna study of each Optuna-driven Tune stage (a journal file,
                            study name = the stage: `optuna-dashboard optuna/student.log`)
  report/                   `skd-tune report`
  .lock                     the local driver lock; `.lease.json` on a URI storage
  .driver.json              local Ray processes of the driver (stopped if it was killed)
"""

from __future__ import annotations

__all__ = [
    "CLUSTERS",
    "DRIVER_RECORD",
    "EXPORT",
    "LEASE",
    "LOCK",
    "LOGITS",
    "LOGIT_SPLITS",
    "OPTUNA",
    "REPORT",
    "RESULTS",
    "SPEC",
    "STATE",
    "TABLES",
    "TUNE_DIRS",
    "results_file",
    "study_file",
    "table_files",
]

SPEC = "spec.yaml"
STATE = "state.json"
LOGITS = "teacher_logits"
LOGIT_SPLITS = ("train", "val", "test")
CLUSTERS = f"{LOGITS}/clusters.npz"
RESULTS = "results"
EXPORT = "export"
REPORT = "report"
OPTUNA = "optuna"
LOCK = ".lock"
LEASE = ".lease.json"
DRIVER_RECORD = ".driver.json"
# The Ray Tune experiment of each Tune stage (Ray Tune reads and writes these itself, also on a URI).
TUNE_DIRS = {
    "teacher": "teacher",
    "student": "student",
    "search_kd": "student_kd",
    "search_nokd": "student_nokd",
    "methods": "final",
}
# The results tables of each Tune stage: the file-name prefix of its trials/epochs tables and journal.
TABLES = {"student": "", "teacher": "teacher_", "search_kd": "kd_", "search_nokd": "nokd_", "methods": "methods_"}
# Single results files, by what they hold.
_RESULT_FILES = {
    "data": "data.json",
    "subclasses": "subclasses.json",
    "method_runs": "methods.parquet",
    "method_summary": "methods_summary.parquet",
    "method_pairs": "methods_pairs.parquet",
    "pareto": "pareto.parquet",  # the student search's Pareto front (search.objectives; pareto.py)
}


def results_file(kind: str) -> str:
    """`results/<file>` for `kind` in data, subclasses, method_runs, method_summary, method_pairs, pareto."""
    return f"{RESULTS}/{_RESULT_FILES[kind]}"


def table_files(table: str) -> dict[str, str]:
    """The files of the results table `table` (student, teacher, methods): trials, epochs and journal."""
    prefix = TABLES[table]
    return {
        kind: f"{RESULTS}/{prefix}{kind}.{ext}"
        for kind, ext in (("trials", "parquet"), ("epochs", "parquet"), ("journal", "jsonl"))
    }


def study_file(stage: str) -> str:
    """`optuna/<stage>.log`: the Optuna journal file of the Tune stage `stage` (its study is named `stage`)."""
    return f"{OPTUNA}/{stage}.log"
