"""Where an experiment lives: a local directory, or a URI that pyarrow understands (s3://, gs://, ...).

With a URI, every file of the experiment is kept on that storage, so a search resumed from another
head node finds everything:

- the Ray Tune experiments (`teacher/`, `student/`, `final/`: trials, checkpoints, Tune's state) are
  written there by Ray Tune itself (`RunConfig(storage_path=URI)`, `Tuner.restore(URI)`), which uses
  pyarrow's filesystems too;
- the driver's own files (the frozen spec, the state, teacher_logits/, results/, export/, report/) are
  worked on in a local *mirror* of the experiment and uploaded after every write (the results tables
  and their journal on every flush, at most once a second). A run, `status`, `report` or `export`
  first pulls them from the storage into the mirror, so the mirror is a cache: deleting it, or
  starting on another machine, loses nothing that was uploaded.

Object stores write each file whole (no partial objects), so uploads need no temporary names. After a
SIGKILL of the driver resumed on the same machine, the mirror's journal (appended line by line) still
has every result; resumed on another machine, the results of the last second before the kill may be
missing from the tables (Ray Tune's own state on the storage is complete). Pure pyarrow, no Ray.
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass
from pathlib import Path

from ..atomic import write_atomic
from ..errors import UserError, first_line
from . import layout

__all__ = ["Remote", "checkout", "download_dir", "is_uri", "join", "mirror_dir", "open_remote", "pull", "push"]

# The Ray Tune experiments stay on the storage (Ray Tune reads and writes them there itself).
TUNE_DIRS = tuple(layout.TUNE_DIRS.values())
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


def is_uri(location: str | os.PathLike) -> bool:
    """True for `s3://...`, `gs://...`, `hdfs://...` and the like; False for local paths and file://."""
    text = str(location)
    return bool(_SCHEME.match(text)) and not text.startswith("file://")


def join(location: str, *parts: str) -> str:
    """`location/part/...` for a local path or a URI (query parameters, if any, stay at the end)."""
    base, _, query = str(location).partition("?")
    out = base.rstrip("/")
    for part in parts:
        out = f"{out}/{str(part).strip('/')}"
    return f"{out}?{query}" if query else out


@dataclass(frozen=True)
class Remote:
    """An experiment directory on a pyarrow filesystem: `fs` and the path inside it, and its URI."""

    fs: object  # pyarrow.fs.FileSystem
    path: str
    uri: str

    def child(self, rel: str) -> str:
        return f"{self.path.rstrip('/')}/{rel.strip('/')}" if rel else self.path


def open_remote(uri: str) -> Remote:
    """The pyarrow filesystem of `uri` (credentials and endpoint from the usual environment, e.g.
    AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY / AWS_ENDPOINT_URL for S3)."""
    import pyarrow.fs as pafs

    try:
        fs, path = pafs.FileSystem.from_uri(uri)
    except (ValueError, OSError) as e:
        raise UserError(
            f"storage {uri!r}: pyarrow cannot open it ({first_line(e)}). Use a local path or a URI pyarrow "
            "understands (s3://bucket/prefix, gs://bucket/prefix), with its credentials in the environment"
        ) from None
    return Remote(fs, path.rstrip("/"), uri)


def mirror_dir(fs_path: str) -> Path:
    """The local mirror of the experiment at `fs_path` (its path on the storage's filesystem, e.g.
    `bucket/runs/name`): `$SKD_TUNE_CACHE` (default ~/.cache/skd-tune)`/mirror/<hash>/<name>`. Derived
    from the path alone, so the driver and its Ray Tune callback find the same mirror."""
    base = Path(os.environ.get("SKD_TUNE_CACHE") or Path.home() / ".cache" / "skd-tune")
    path = fs_path.strip("/")
    digest = hashlib.sha256(path.encode()).hexdigest()[:16]
    return base / "mirror" / digest / (path.rsplit("/", 1)[-1] or "experiment")


def _files(remote: Remote, rel: str = "") -> list[tuple[str, int, float]]:
    """(path relative to the experiment, size, mtime in s) of every file under `rel` on the storage."""
    import pyarrow.fs as pafs

    base = remote.child(rel)
    info = remote.fs.get_file_info(base)
    if info.type == pafs.FileType.File:
        return [(rel, info.size, _mtime(info))]
    if info.type != pafs.FileType.Directory:
        return []
    out = []
    for entry in remote.fs.get_file_info(pafs.FileSelector(base, recursive=True)):
        if entry.type == pafs.FileType.File:
            out.append((entry.path[len(remote.path) + 1 :], entry.size, _mtime(entry)))
    return out


def _mtime(info) -> float:
    return info.mtime.timestamp() if info.mtime is not None else 0.0


def pull(remote: Remote, local: Path, exclude: tuple[str, ...] = (*TUNE_DIRS, layout.LEASE)) -> int:
    """Bring the experiment's files (all but the Ray Tune experiments) from the storage into `local`.

    A file is downloaded when the mirror lacks it or holds an older version; a results journal (only
    ever appended to) when the storage's is longer, so a journal that this machine's killed driver had
    written further than its last upload is kept. Returns the number of files downloaded."""
    n = 0
    for rel, size, mtime in _files(remote):
        if rel.split("/", 1)[0] in exclude:
            continue
        target = local / rel
        if target.exists():
            st = target.stat()
            if rel.endswith("journal.jsonl"):
                if st.st_size >= size:
                    continue
            elif st.st_size == size and st.st_mtime >= mtime - 1:
                continue
        _download(remote, rel, target)
        n += 1
    return n


def _download(remote: Remote, rel: str, target: Path) -> None:
    def copy(dst) -> None:
        with remote.fs.open_input_stream(remote.child(rel)) as src:
            while chunk := src.read(1 << 20):
                dst.write(chunk)

    write_atomic(target, copy)


def download_dir(remote: Remote, rel: str, local: Path) -> Path:
    """Download the directory `rel` of the experiment (e.g. a checkpoint) into `local`; returns `local`."""
    for path, _, _ in _files(remote, rel):
        _download(remote, path, local / path[len(rel.strip("/")) + 1 :])
    return local


def push(local_root: Path, remote: Remote, rel: str) -> None:
    """Upload `local_root/rel` (a file, or a directory with everything under it) to the storage."""
    source = Path(local_root) / rel
    files = (
        [source] if source.is_file() else [p for p in source.rglob("*") if p.is_file() and not p.name.startswith(".")]
    )
    for path in files:
        dest = remote.child(path.relative_to(local_root).as_posix())
        if remote.fs.type_name not in ("s3", "gcs"):  # object stores need (and want) no directory markers
            remote.fs.create_dir(dest.rsplit("/", 1)[0], recursive=True)
        with open(path, "rb") as src, remote.fs.open_output_stream(dest) as dst:
            while chunk := src.read(1 << 20):
                dst.write(chunk)


def checkout(location: str | os.PathLike) -> tuple[Path, Remote | None]:
    """A local directory holding the experiment at `location`: the path itself, or for a URI its
    mirror, brought up to date from the storage (the Ray Tune experiments stay there)."""
    if not is_uri(location):
        return Path(location), None
    remote = open_remote(str(location))
    root = mirror_dir(remote.path)
    root.mkdir(parents=True, exist_ok=True)
    pull(remote, root)
    return root, remote
