"""One way to write a file so that a reader never sees half of it: write a temporary file in the same
directory, then `os.replace` it onto the target (atomic on POSIX file systems).

The temporary name is `.<name>.<pid>.<random>.tmp` beside the target: hidden (`storage.push` skips
dot-files), unique per writer, and removed when the write fails.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

__all__ = ["make_dir", "write_atomic", "write_bytes_atomic", "write_json_atomic", "write_text_atomic"]


def _file_mode() -> int:
    """The mode `open()` would give a new file: 0o666 less this process's umask (read without changing it)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return 0o666 & ~int(line.split()[1], 8)
    except OSError:
        pass
    return 0o644


def write_atomic(
    path: str | os.PathLike, write: Callable[[IO[bytes]], Any] | Callable[[str], Any], *, to_path: bool = False
) -> Path:
    """Write `path` atomically; returns it. `write(f)` fills a binary file object, or with `to_path`,
    `write(tmp_path)` writes the file itself (for writers that take a path: pyarrow, torch.onnx)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp")
    try:
        os.chmod(tmp, _file_mode())  # mkstemp makes 0600; readers (a web server, other users) expect 0644
        if to_path:
            os.close(fd)
            write(tmp)
        else:
            with os.fdopen(fd, "wb") as f:
                write(f)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def make_dir(path: str | os.PathLike, error: type[Exception], fix: str) -> Path:
    """Create the directory `path` (and its parents), or raise `error` naming it, the cause and the `fix`."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise error(f"{path}: cannot create the directory ({e.strerror or e}); {fix}") from None
    return path


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> Path:
    return write_atomic(path, lambda f: f.write(data))


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    return write_bytes_atomic(path, text.encode())


def write_json_atomic(path: str | os.PathLike, obj: Any) -> Path:
    return write_text_atomic(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")
