"""`Experiment`: one experiment directory, its files read and written through one object.

The directory is `root`: the experiment itself, or, when it lives on a URI (s3://, gs://), the local
mirror of its files, uploaded to `remote` after every write (see storage.py). The Ray Tune experiments
live at `tune_location(stage)`, on the storage itself. Readers (`status`, `report`, `export`) and the
pipeline all go through this class; `layout.py` names the files.

Primary files (the frozen spec, the state, the journals, the checkpoints) are never replaced behind
the user's back: a damaged one is an error naming the file and the way out. Derived files (the cached
teacher logits, the Parquet tables) are rebuilt: `load_teacher_logits` returns None for damaged logits,
so their stage runs again, and `repair_tables` rewrites damaged Parquet files from their journals.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..atomic import write_atomic, write_json_atomic
from ..errors import NotAnExperiment, ResultsError, first_line
from . import layout
from .results import ResultsTables, read_table, write_table_atomic
from .state import State, read_state, write_state
from .storage import Remote, checkout, download_dir, join, mirror_dir

__all__ = ["Experiment"]


@dataclass
class Experiment:
    """`<storage>/<name>/`: frozen spec, stage state, Tune experiments, cached logits, results, export."""

    root: Path
    remote: Remote | None = None

    # -- where it is -------------------------------------------------------------------------------
    @classmethod
    def open(cls, location: str | os.PathLike) -> Experiment:
        """The experiment at a local path or a URI; for a URI, its files are pulled into the mirror first."""
        root, remote = checkout(location)
        return cls(Path(root).resolve(), remote)

    @classmethod
    def existing(cls, location: str | os.PathLike) -> Experiment:
        """Like `open`, for the readers: raises `NotAnExperiment` unless `location` holds an experiment."""
        exp = cls.open(location)
        shown = location if exp.remote is not None else exp.root
        if exp.remote is None and not exp.root.is_dir():
            raise NotAnExperiment(
                f"{shown}: no such directory. Give the directory of an experiment, the one `skd-tune run` created "
                f"as STORAGE/NAME and that holds {layout.SPEC} and {layout.STATE}, e.g. runs/digits-skd"
            )
        if not exp.path(layout.SPEC).is_file():
            raise NotAnExperiment(
                f"{shown}: not an skd-tune experiment (it has no spec.yaml). Give the directory that `skd-tune run` "
                f"created as STORAGE/NAME, which holds {layout.SPEC} and {layout.STATE}, e.g. runs/digits-skd"
            )
        return exp

    @classmethod
    def at_storage(cls, fs: Any, path: str) -> Experiment:
        """The experiment whose Tune experiments Ray keeps under `path` of the pyarrow filesystem `fs`
        (what a Tune callback knows about a trial): the directory itself, or its mirror on a URI storage."""
        if fs.type_name == "local":
            return cls(Path(path))
        return cls(mirror_dir(path), Remote(fs, path, path))

    @property
    def location(self) -> str:
        """Where the experiment lives, as the user named it: a URI, or the local directory."""
        return self.remote.uri if self.remote is not None else str(self.root)

    def path(self, rel: str) -> Path:
        """The local file `rel` (a `layout` name) of the experiment, or of its mirror."""
        return self.root / rel

    def tune_location(self, stage: str = "") -> str:
        """The Ray Tune experiment of `stage` (or, with "", its storage_path): a URI or a local path."""
        base = self.remote.uri if self.remote is not None else str(self.root.resolve())
        return join(base, layout.TUNE_DIRS[stage]) if stage else base

    def study_path(self, stage: str) -> Path:
        """The Optuna journal file of `stage` (study name: `stage`), local (in the mirror on a URI storage:
        `sync(layout.study_file(stage))` uploads it)."""
        return self.path(layout.study_file(stage))

    def tune_storage(self) -> tuple[Any, str]:
        """(pyarrow filesystem, path) of the Tune experiments' storage, as Ray Tune's trials carry it."""
        if self.remote is not None:
            return self.remote.fs, self.remote.path
        import pyarrow.fs as pafs

        return pafs.LocalFileSystem(), str(self.root.resolve())

    def sync(self, *rels: str) -> None:
        """Upload these files or directories (relative to the experiment) to the storage, if remote."""
        if self.remote is not None:
            from .storage import push

            for rel in rels:
                push(self.root, self.remote, rel)

    def relative(self, reported_path: str) -> str:
        """A path Ray Tune reported (a checkpoint) relative to the experiment, wherever it lives."""
        if self.remote is not None:
            prefix = self.remote.path + "/"
            return reported_path[len(prefix) :] if reported_path.startswith(prefix) else reported_path
        return os.path.relpath(reported_path, self.root.resolve())

    def local_dir(self, rel: str, scratch: Path) -> Path:
        """A local copy of the experiment's directory `rel` (a checkpoint): in place, or downloaded into `scratch`."""
        if self.remote is None:
            return self.root / rel
        return download_dir(self.remote, rel, scratch / Path(rel).name)

    def has_tune_experiment(self, stage: str) -> bool:
        if self.remote is None:
            return (self.root / layout.TUNE_DIRS[stage]).exists()
        import pyarrow.fs as pafs

        info = self.remote.fs.get_file_info(self.remote.child(layout.TUNE_DIRS[stage]))
        return info.type != pafs.FileType.NotFound

    def delete_tune_experiment(self, stage: str) -> None:
        if self.remote is None:
            shutil.rmtree(self.root / layout.TUNE_DIRS[stage], ignore_errors=True)
        elif self.has_tune_experiment(stage):
            self.remote.fs.delete_dir(self.remote.child(layout.TUNE_DIRS[stage]))

    # -- state -------------------------------------------------------------------------------------
    def state(self) -> State:
        return read_state(self.path(layout.STATE))

    def write_state(self, state: State) -> None:
        write_state(self.path(layout.STATE), state)
        self.sync(layout.STATE)

    def done(self, stage: str) -> dict[str, Any] | None:
        """What `stage` recorded when it finished, or None."""
        return self.state().done(stage)

    def mark_done(self, stage: str, **info: Any) -> None:
        self.write_state(self.state().with_done(stage, info))

    def started(self, stage: str) -> bool:
        return stage in self.state().started

    def mark_started(self, stage: str) -> None:
        self.write_state(self.state().with_started(stage))

    # -- results -----------------------------------------------------------------------------------
    def tables(self, table: str, param_names: list[str], metric: str, mode: str) -> ResultsTables:
        """The results tables of a Tune stage (student, teacher, methods), written as trials report;
        uploaded to the storage on every flush when it is remote."""
        on_write = None
        if self.remote is not None:

            def on_write(paths: list[Path]) -> None:
                self.sync(*(p.relative_to(self.root).as_posix() for p in paths))

        return ResultsTables(self.path(layout.RESULTS), param_names, metric, mode, table=table, on_write=on_write)

    def trials(self, table: str = "student") -> pd.DataFrame | None:
        """The trials table of a stage (None until written; a damaged file raises ResultsError)."""
        return read_table(self.path(layout.table_files(table)["trials"]))

    def epochs(self, table: str = "student") -> pd.DataFrame | None:
        return read_table(self.path(layout.table_files(table)["epochs"]))

    def repair_tables(self, params: dict[str, list[str]], metric: str, mode: str, say: Callable[[str], None]) -> None:
        """Rewrite every damaged Parquet table that has a journal to rebuild it from, saying so.
        `params`: the searched parameters of each table (student, teacher, methods)."""
        for table, names in params.items():
            files = layout.table_files(table)
            if not self.path(files["journal"]).exists():
                continue
            try:
                read_table(self.path(files["trials"]))
                read_table(self.path(files["epochs"]))
            except ResultsError:
                tables = self.tables(table, names, metric, mode)
                tables.flush(force=True)
                tables.close()
                say(f"rebuilt the damaged {files['trials']} and {files['epochs']} from {files['journal']}")

    def write_result(self, kind: str, value: pd.DataFrame | dict[str, Any]) -> None:
        """Write the results file of `kind` (data, subclasses: JSON; method_runs, method_summary: Parquet)."""
        rel = layout.results_file(kind)
        if isinstance(value, pd.DataFrame):
            write_table_atomic(value, self.path(rel))
        else:
            write_json_atomic(self.path(rel), value)
        self.sync(rel)

    def result(self, kind: str) -> pd.DataFrame | dict[str, Any] | None:
        """The results file of `kind` (None until written); a damaged one raises ResultsError naming it."""
        path = self.path(layout.results_file(kind))
        if path.suffix == ".parquet":
            return read_table(path)
        if not path.exists():
            return None
        import json

        try:
            return json.loads(path.read_text())
        except (ValueError, OSError) as e:
            raise ResultsError(
                f"{path}: not valid JSON ({first_line(e)}). It was damaged; delete it and run `skd-tune run "
                f"{self.location}` again to rewrite it"
            ) from None

    # -- teacher logits (derived from the teacher's checkpoint) -----------------------------------
    def save_teacher_logits(self, logits: dict[str, np.ndarray]) -> None:
        for split in layout.LOGIT_SPLITS:
            arr = np.asarray(logits[split], dtype=np.float32)
            write_atomic(self.path(f"{layout.LOGITS}/{split}.npy"), lambda f, arr=arr: np.save(f, arr))
        self.sync(layout.LOGITS)

    def load_teacher_logits(self, say: Callable[[str], None] | None = None) -> dict[str, np.ndarray] | None:
        """The cached logits of every split, or None when one is missing or damaged (`say` tells which:
        they are derived, and their stage computes them again from the teacher's checkpoint)."""
        out = {}
        for split in layout.LOGIT_SPLITS:
            path = self.path(f"{layout.LOGITS}/{split}.npy")
            try:
                out[split] = np.load(path, allow_pickle=False)
            except (OSError, ValueError, EOFError) as e:
                if say is not None:
                    say(
                        f"{path} is missing or damaged ({first_line(e)}); recomputing the teacher's logits from its checkpoint"
                    )
                return None
        return out

    def save_clusters(self, arrays: dict[str, np.ndarray]) -> None:
        """Cache the clusters of `data.subclasses: clustered` (teachers.Clusters.arrays) with the logits."""
        write_atomic(self.path(layout.CLUSTERS), lambda f: np.savez(f, **arrays))
        self.sync(layout.CLUSTERS)

    def load_clusters(self) -> dict[str, np.ndarray] | None:
        """The cached clusters' arrays, or None when missing or damaged (then they are fitted again)."""
        import zipfile

        try:
            with np.load(self.path(layout.CLUSTERS), allow_pickle=False) as f:
                return {k: f[k] for k in f.files}
        except (OSError, ValueError, EOFError, zipfile.BadZipFile):
            return None

    # The directories of the experiment (locally: the experiment's own, or its mirror's).
    logits_dir = property(lambda self: self.path(layout.LOGITS))
    export_dir = property(lambda self: self.path(layout.EXPORT))
    report_dir = property(lambda self: self.path(layout.REPORT))
    results_dir = property(lambda self: self.path(layout.RESULTS))
