"""Files: every output is made in memory and moved into place (`write_atomic`), with the
mode a new file would get, so a failure never leaves a partial file or clobbers a good one;
a folder is made with one clear line when it cannot be (`make_folder`)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from tracer.errors import TracerError


def _mode_for(path: Path) -> int:
    """The mode `path` should get: an existing file keeps its own; a new one gets what
    open() would give it (0666 less the umask)."""
    try:
        return path.stat().st_mode & 0o7777
    except OSError:
        return 0o666 & ~_umask()


def _umask() -> int:
    try:  # read without changing it (os.umask can only be read by setting it)
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def write_atomic(path: Path, data: bytes) -> None:
    """Write `data` to a temporary file beside `path`, then rename it over `path`."""
    path = Path(os.path.realpath(path)) if path.is_symlink() else path
    mode = _mode_for(path)
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as e:
        raise TracerError(f"cannot write {path}: {e.strerror or e}") from None
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except OSError as e:
        Path(tmp).unlink(missing_ok=True)
        raise TracerError(f"cannot write {path}: {e.strerror or e}") from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def make_folder(path: Path) -> Path:
    """Make the folder `path` (and its parents) unless it exists; a TracerError in one line
    when it cannot be made."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise TracerError(f"cannot create {path}: {e.strerror or e}") from None
    return path


def check_folder(path: Path, file: Path | None = None) -> None:
    """Fail now, with one clear line, when files cannot be made in the folder `path` (made
    later, if it does not exist yet), or `file` in it: a file is made in it, or a folder in
    the nearest folder above it that exists, and removed. Permission bits alone do not
    tell (root passes them, and /proc refuses even root)."""
    existing = path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    what = f"write {file}" if file is not None else f"create {path}"
    if not existing.is_dir():
        raise TracerError(f"cannot {what}: {existing} is not a folder")
    try:
        if existing == path:
            fd, probe = tempfile.mkstemp(dir=path, prefix=".tracer-probe-")
            os.close(fd)
            os.unlink(probe)
        else:
            os.rmdir(tempfile.mkdtemp(dir=existing, prefix=".tracer-probe-"))
    except OSError as e:
        raise TracerError(f"cannot {what}: {e.strerror or e}") from None
