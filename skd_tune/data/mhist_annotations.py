"""MHIST's annotations (Wei et al. 2021): `annotations.csv` read and checked, and the subclasses that the
annotators' agreement defines (see mhist.py for the images and the dataset).

Columns: Image Name, Majority Vote Label (HP | SSA), Number of Annotators who Selected SSA (Out of 7)
(0-7), Partition (train | test). Every problem is reported with its CSV line; the agreement of a sample
is the number of the 7 pathologists who voted for its majority label (4-7). Subclasses come from a scheme
(`subclasses_for`) or from a grouping of the SSA vote counts (`subclasses_for_votes`).
"""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..spec.groupings import parse_vote_groups
from .base import DataError
from .synth import COLUMNS

__all__ = [
    "ANNOTATIONS",
    "CLASS_NAMES",
    "IMAGES",
    "SCHEMES",
    "Annotations",
    "read_annotations",
    "subclasses_for",
    "subclasses_for_votes",
    "vote_group_name",
]

ANNOTATIONS = "annotations.csv"
IMAGES = "images"
COL_NAME, COL_LABEL, COL_VOTES, COL_PARTITION = COLUMNS
CLASS_NAMES = ("HP", "SSA")
PARTITIONS = ("train", "test")
SCHEMES = ("agreement", "unanimous")
_MAX_LISTED = 3  # problems spelled out in one error message


@dataclass(frozen=True)
class Annotations:
    """The validated rows of annotations.csv, in file order."""

    path: Path
    names: list[str]
    label: np.ndarray  # (N,) int64: 0 HP, 1 SSA
    votes: np.ndarray  # (N,) int64: annotators of 7 who selected SSA
    test: np.ndarray  # (N,) bool: in the test partition
    lines: np.ndarray  # (N,) int64: 1-based line of each row in the CSV
    raw: bytes  # the file's bytes (for the cache key)

    @property
    def agreement(self) -> np.ndarray:
        """Annotators of 7 who chose the majority label: 4 (a 4-3 split) to 7 (unanimous)."""
        return np.where(self.label == 1, self.votes, 7 - self.votes)

    def summary(self) -> str:
        """E.g. '3152 images (2175 train, 977 test; 2162 HP, 990 SSA; 525 split 4-3)'."""
        n_test = int(self.test.sum())
        n_ssa = int(self.label.sum())
        n_split = int((self.agreement == 4).sum())
        n = len(self.names)
        return f"{n} images ({n - n_test} train, {n_test} test; {n - n_ssa} HP, {n_ssa} SSA; {n_split} split 4-3)"


def _problems_message(path: Path, problems: list[tuple[int, str]], fix: str) -> str:
    shown = "; ".join(f"line {line}: {msg}" for line, msg in problems[:_MAX_LISTED])
    more = len(problems) - _MAX_LISTED
    tail = f"; and {more} more row{'s' if more != 1 else ''} with problems" if more > 0 else ""
    return f"{path}: {shown}{tail}. {fix}"


def read_annotations(path: str | os.PathLike) -> Annotations:
    """Read and validate MHIST's annotations.csv; raise DataError naming the file, the line and the fix."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise DataError(
            f"{path}: annotations file not found. data.root must be an MHIST directory holding {ANNOTATIONS} "
            f"and {IMAGES}/ (write a synthetic one with: skd-tune data synth-mhist DIR)"
        ) from None
    except OSError as e:
        raise DataError(
            f"{path}: cannot read the annotations file ({e.strerror}); check the path and its permissions"
        ) from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: not a UTF-8 text file (byte {e.start}); it must be MHIST's annotations.csv") from None

    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = next(reader, None)
    except csv.Error as e:
        raise DataError(
            f"{path}, line 1: not a readable CSV header ({e}); the header must be: {', '.join(COLUMNS)}"
        ) from None
    if header is None:
        raise DataError(f"{path}: the file is empty; it needs the header {', '.join(COLUMNS)} and one row per image")
    header = [h.strip() for h in header]
    missing = [c for c in COLUMNS if c not in header]
    if missing:
        found = ", ".join(repr(h) for h in header if h) or "nothing"
        raise DataError(
            f"{path}: missing column(s) {', '.join(repr(c) for c in missing)}; found: {found}. "
            f"The header must name {', '.join(repr(c) for c in COLUMNS)} (as MHIST's annotations.csv)"
        )
    col = {c: header.index(c) for c in COLUMNS}
    line = reader.line_num  # the header's last line
    width = max(col.values()) + 1

    names: list[str] = []
    label: list[int] = []
    votes: list[int] = []
    test: list[bool] = []
    lines: list[int] = []
    first_line: dict[str, int] = {}
    problems: list[tuple[int, str]] = []
    while True:
        try:
            row = next(reader)
        except StopIteration:
            break
        except csv.Error as e:
            problems.append((reader.line_num, f"not a readable CSV row ({e})"))
            break
        line_start = line + 1  # the row's first line (a quoted field may span several)
        line = reader.line_num
        if not row or all(not f.strip() for f in row):
            continue  # blank line
        if len(row) < width:
            problems.append((line_start, f"{len(row)} field(s) but the header has {len(header)}"))
            continue
        name = row[col[COL_NAME]].strip()
        lab = row[col[COL_LABEL]].strip()
        vote_text = row[col[COL_VOTES]].strip()
        part = row[col[COL_PARTITION]].strip()
        bad = []
        if not name:
            bad.append(f"empty {COL_NAME!r}")
        elif name in (".", "..") or "/" in name or "\\" in name:
            bad.append(f"{COL_NAME} {name!r} must be a file name inside {IMAGES}/, without directories")
        elif name in first_line:
            bad.append(
                f"image {name!r} is listed again (first on line {first_line[name]}); each image must appear once"
            )
        if lab not in CLASS_NAMES:
            bad.append(f"unknown {COL_LABEL} {lab!r}; expected HP or SSA")
        vote = int(vote_text) if vote_text.isascii() and vote_text.isdigit() else None
        if vote is None or vote > 7:
            vote = None
            bad.append(f"{COL_VOTES!r} must be an integer from 0 to 7, got {vote_text!r}")
        if lab in CLASS_NAMES and vote is not None and (lab == "SSA") != (vote >= 4):
            bad.append(
                f"{COL_LABEL} is {lab} but {vote} of 7 annotators selected SSA; the majority label must be "
                f"SSA when 4 or more selected SSA and HP otherwise"
            )
        if part not in PARTITIONS:
            bad.append(f"{COL_PARTITION} must be train or test, got {part!r}")
        if bad:
            problems.append((line_start, "; ".join(bad)))
            continue
        first_line[name] = line_start
        names.append(name)
        label.append(CLASS_NAMES.index(lab))
        votes.append(vote)
        test.append(part == "test")
        lines.append(line_start)

    if problems:
        raise DataError(
            _problems_message(path, problems, f"Fix {'that row' if len(problems) == 1 else 'those rows'} of the CSV")
        )
    test_arr = np.array(test, dtype=bool)
    n_train, n_test = int((~test_arr).sum()), int(test_arr.sum())
    if n_train < 2 or n_test < 1:
        raise DataError(
            f"{path}: {n_train} train and {n_test} test row(s); MHIST needs at least 2 rows in the train "
            "partition (training and validation are taken from it) and 1 in the test partition"
        )
    return Annotations(
        path=path,
        names=names,
        label=np.array(label, dtype=np.int64),
        votes=np.array(votes, dtype=np.int64),
        test=test_arr,
        lines=np.array(lines, dtype=np.int64),
        raw=raw,
    )


def subclasses_for(scheme: str, label: np.ndarray, agreement: np.ndarray) -> tuple[np.ndarray, list[str], np.ndarray]:
    """(subclass index per sample, subclass names, subclass -> class) for a scheme.

    `agreement`: 8 subclasses HP-7/7, HP-6/7, HP-5/7, HP-4/7, SSA-7/7, ..., SSA-4/7.
    `unanimous`: 4 subclasses HP-unanimous, HP-split, SSA-unanimous, SSA-split (split: 4 to 6 of 7).
    Every subclass is kept, even one without samples.
    """
    if scheme == "agreement":
        names = [f"{c}-{a}/7" for c in CLASS_NAMES for a in (7, 6, 5, 4)]
        sub = label * 4 + (7 - agreement)
        s2c = np.repeat(np.arange(2), 4)
    elif scheme == "unanimous":
        names = [f"{c}-{k}" for c in CLASS_NAMES for k in ("unanimous", "split")]
        sub = label * 2 + (agreement < 7)
        s2c = np.repeat(np.arange(2), 2)
    else:
        raise DataError(
            f"data.subclasses: {scheme!r} is not a subclass scheme of source 'mhist'; available: {', '.join(SCHEMES)}"
        )
    return sub.astype(np.int64), names, s2c.astype(np.int64)


def vote_group_name(cls: str, group: tuple[int, ...] | list[int]) -> str:
    """The subclass name of a group of SSA vote counts: HP-0, HP-2..3 (consecutive counts lo..hi),
    HP-1,3 (not consecutive: its runs joined by commas, e.g. HP-0..1,3)."""
    runs: list[list[int]] = []
    for v in sorted(group):
        if runs and v == runs[-1][-1] + 1:
            runs[-1].append(v)
        else:
            runs.append([v])
    return f"{cls}-" + ",".join(f"{r[0]}..{r[-1]}" if len(r) > 1 else f"{r[0]}" for r in runs)


def subclasses_for_votes(
    groups: Mapping[str, Sequence[Sequence[int]]], label: np.ndarray, votes: np.ndarray
) -> tuple[np.ndarray, list[str], np.ndarray]:
    """(subclass index per sample, subclass names, subclass -> class) for a grouping of the SSA vote counts.

    `groups`: class -> its groups of SSA vote counts (`DataSpec.vote_groups`, e.g. {"HP": [[0], [1], [2, 3]],
    "SSA": [[4, 5], [6], [7]]}); checked again here, as the spec does, so a grouping that reaches the loader
    any other way is refused too. One subclass per group, HP's groups in the order given, then SSA's, named by
    `vote_group_name`. Every subclass is kept, even one without samples. `label` (0 HP, 1 SSA) must be the
    majority label `votes` imply (read_annotations checks that): a group's samples are all of its class.
    """
    try:
        frozen = dict(parse_vote_groups(groups))
    except ValueError as e:
        raise DataError(f"data.subclasses: {e}") from None
    group_of_vote = np.empty(8, dtype=np.int64)
    names: list[str] = []
    s2c: list[int] = []
    for c, cls in enumerate(CLASS_NAMES):
        for group in frozen[cls]:
            group_of_vote[list(group)] = len(names)
            names.append(vote_group_name(cls, group))
            s2c.append(c)
    sub = group_of_vote[votes]
    s2c_arr = np.array(s2c, dtype=np.int64)
    if len(sub) and not np.array_equal(s2c_arr[sub], label):
        raise DataError("data.subclasses: a sample's majority label disagrees with its SSA votes (HP 0-3, SSA 4-7)")
    return sub, names, s2c_arr


# --------------------------------------------------------------------------------------------------
# Images and their cache
