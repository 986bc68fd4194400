"""Groupings of MHIST's SSA vote counts into subclasses, the mapping form of `data.subclasses`::

    data:
      source: mhist
      subclasses: {HP: [[0], [1], [2, 3]], SSA: [[4, 5], [6], [7]]}

MHIST's annotations give, per image, how many of its 7 pathologists voted SSA: HP images have 0-3 SSA
votes, SSA images 4-7. Each group of vote counts is one subclass, HP's groups in the order given, then
SSA's; each of a class's vote counts must be in exactly one of its groups. This module checks a grouping
without I/O (the spec's rule: every problem in one message, naming the class, the vote count and the fix)
and holds it in a frozen form (a tuple of (class, groups) pairs: the spec stays hashable), which
`data/mhist_annotations.py` turns into subclasses. `Subclasses`, the field's type, checks the other form,
a scheme name, against the source's schemes too, so both are reported as `data.subclasses: ...`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Annotated, Any

from pydantic import BeforeValidator, PlainSerializer, ValidationInfo

from ..names import INVENTED, SOURCES
from .teacher_source import CLUSTERED

__all__ = [
    "VOTES",
    "VOTE_EXAMPLE",
    "VOTE_LEVELS",
    "VOTE_SOURCE",
    "Subclasses",
    "VoteGroups",
    "parse_vote_groups",
    "vote_groups_json",
]

VOTES = "votes"  # `DataSpec.subclass_scheme` of a grouping (a scheme name other code can print and compare)
VOTE_SOURCE = "mhist"  # the one source with vote counts
# The SSA vote counts (of 7 annotators) each class's images have, in class order.
VOTE_LEVELS: dict[str, tuple[int, ...]] = {"HP": (0, 1, 2, 3), "SSA": (4, 5, 6, 7)}
VOTE_EXAMPLE = "{HP: [[0], [1], [2, 3]], SSA: [[4, 5], [6], [7]]}"
_CLASS_EXAMPLE = {"HP": "[[0], [1], [2, 3]]", "SSA": "[[4, 5], [6], [7]]"}

# A validated grouping: ((class, ((vote, ...), ...)), ...), HP then SSA, each group's votes sorted.
VoteGroups = tuple[tuple[str, tuple[tuple[int, ...], ...]], ...]


def _span(cls: str) -> str:
    return f"{VOTE_LEVELS[cls][0]}-{VOTE_LEVELS[cls][-1]}"


def _show(value: Any) -> str:
    """`value` as the user wrote it (YAML's flow style; a tuple shown as a list)."""
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_show(v) for v in value) + "]"
    return repr(value)


def _counts(values: list[int]) -> str:
    return f"vote count {values[0]}" if len(values) == 1 else "vote counts " + ", ".join(map(str, values))


def _check_class(cls: str, raw: Any) -> tuple[tuple[tuple[int, ...], ...], list[str]]:
    """(the class's groups, normalised; the problems of its grouping, each naming the class)."""
    own = VOTE_LEVELS[cls]
    fix = f"each of {cls}'s vote counts {_span(cls)} must be in exactly one group"
    if isinstance(raw, (str, bytes)) or not isinstance(raw, Sequence) or not raw:
        return (), [
            f"{cls} {_show(raw)}: must be a non-empty list of groups, each a list of SSA vote counts, "
            f"e.g. {cls}: {_CLASS_EXAMPLE[cls]}; {fix}"
        ]
    problems: list[str] = []
    groups: list[tuple[int, ...]] = []
    first: dict[int, int] = {}  # vote count -> the group (1-based) that holds it first
    bare = [g for g in raw if isinstance(g, int) and not isinstance(g, bool)]
    if len(bare) == len(raw):  # a flat list of vote counts: say both ways of grouping them
        problems.append(
            f"a list of vote counts, not of groups (write {_show([[g] for g in bare])} for a subclass each, "
            f"or {_show([bare])} for one)"
        )
    for i, group in enumerate(raw, 1):
        if isinstance(group, int) and not isinstance(group, bool):
            if len(bare) < len(raw):
                problems.append(f"group {i} is the bare number {group} (write it as a list, [{group}])")
            group = [group]  # still checked and counted, so that it is not also reported missing
        elif isinstance(group, (str, bytes)) or not isinstance(group, Sequence):
            problems.append(f"group {i} ({group!r}) is not a list of vote counts")
            continue
        if not group:
            problems.append(f"group {i} is empty (remove it or give it vote counts)")
            continue
        votes: list[int] = []
        for v in group:
            if isinstance(v, bool) or not isinstance(v, int):
                problems.append(f"{v!r} in group {i} is not a vote count (a whole number 0-7)")
            elif not 0 <= v <= 7:
                problems.append(f"vote count {v} in group {i} is out of range: 0-7 of the 7 annotators voted SSA")
            elif v not in own:
                other = next(c for c, levels in VOTE_LEVELS.items() if v in levels)
                problems.append(
                    f"vote count {v} in group {i} belongs to {other} ({other} images have {_span(other)} SSA votes)"
                )
            elif v in first:
                where = f"twice in group {i}" if first[v] == i else f"in groups {first[v]} and {i}"
                problems.append(f"vote count {v} is used {where}")
            else:
                first[v] = i
                votes.append(v)
        groups.append(tuple(sorted(votes)))
    missing = [v for v in own if v not in first]
    if missing:
        problems.append(f"{_counts(missing)} {'is' if len(missing) == 1 else 'are'} in no group")
    if problems:
        return (), [f"{cls} {_show(raw)}: {', '.join(problems)}; {fix}"]
    return tuple(groups), []


def parse_vote_groups(value: Any, source: str | None = VOTE_SOURCE) -> VoteGroups:
    """A grouping of MHIST's SSA vote counts checked and frozen (HP's groups, then SSA's), or `ValueError`
    listing every problem. `value`: a mapping class -> list of groups (or this function's own result);
    `source`: the spec's data source (None when that failed validation: only the grouping is checked)."""
    if source is not None and source != VOTE_SOURCE:
        schemes = ", ".join((*SOURCES[source][1], INVENTED, CLUSTERED)) if source in SOURCES else "its scheme names"
        raise ValueError(
            f"a grouping of vote counts is only for source {VOTE_SOURCE!r} (it groups MHIST's SSA vote counts "
            f"0-7); source {source!r} takes a scheme name: {schemes}"
        )
    if isinstance(value, tuple):  # the frozen form (e.g. another DataSpec's field): check it again
        try:
            value = dict(value)
        except (TypeError, ValueError):
            pass
    if not isinstance(value, Mapping):
        raise ValueError(
            f"must be a subclass scheme name or, for source {VOTE_SOURCE!r}, a mapping of class to groups of "
            f"SSA vote counts, e.g. {VOTE_EXAMPLE}"
        )
    classes = " and ".join(VOTE_LEVELS)
    problems = [f"unknown class {k!r}; the classes are {classes}" for k in value if k not in VOTE_LEVELS]
    problems += [
        f"class {c} is missing: give its groups too, e.g. {c}: {_CLASS_EXAMPLE[c]}"
        for c in VOTE_LEVELS
        if c not in value
    ]
    out = []
    for cls in VOTE_LEVELS:
        if cls in value:
            groups, bad = _check_class(cls, value[cls])
            problems += bad
            out.append((cls, groups))
    if problems:
        raise ValueError("; ".join(problems))
    return tuple(out)


def vote_groups_json(groups: VoteGroups) -> dict[str, list[list[int]]]:
    """The frozen grouping as the spec writes it: {"HP": [[0], [1], [2, 3]], "SSA": [...]}."""
    return {cls: [list(g) for g in class_groups] for cls, class_groups in groups}


def _validate(value: Any, info: ValidationInfo) -> Any:
    """`data.subclasses` checked against `data.source` (when that is valid): a scheme name of the source, or
    (mhist) a grouping, returned frozen."""
    source = info.data.get("source")
    if isinstance(value, str) and source in SOURCES and value not in (*SOURCES[source][1], INVENTED, CLUSTERED):
        grouping = f"; or a grouping of SSA vote counts, e.g. {VOTE_EXAMPLE}" if source == VOTE_SOURCE else ""
        raise ValueError(
            f"{value!r} is not a subclass scheme of source {source!r}; "
            f"available: {', '.join((*SOURCES[source][1], INVENTED, CLUSTERED))}{grouping}"
        )
    if value is None or isinstance(value, str):
        return value
    return parse_vote_groups(value, source)


def _serialize(value: Any) -> Any:
    return vote_groups_json(value) if isinstance(value, tuple) else value


# The type of `DataSpec.subclasses`: a scheme name of the source (names.SOURCES, `invented` or `clustered`), None (the
# source's default), or a frozen grouping, dumped as the mapping the spec gives (spec_hash and the frozen
# spec round-trip).
Subclasses = Annotated[str | VoteGroups | None, BeforeValidator(_validate), PlainSerializer(_serialize)]
