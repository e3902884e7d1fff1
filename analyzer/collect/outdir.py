"""The bundle directory: made by root, then written only through a descriptor held on it.

collect runs as root, and ``--out`` is a name a user may be able to change while it runs (a
directory made beforehand, symlinks planted in it). So ``--out`` must be new, or an empty
directory that only root can write (owned by root, not writable by group or others, not a
symlink); it is opened once (``O_DIRECTORY|O_NOFOLLOW``) and checked through that descriptor, and
every file of the bundle is made relative to it with ``O_CREAT|O_EXCL|O_NOFOLLOW``: renaming or
replacing a name cannot redirect a write, and no existing file is ever opened for writing.
tcpdump gets the directory as its working directory and a bare file name.

A write that fails (a full disk) never raises: the half-written file is removed (a log is cut
back to its last whole line), so what the bundle holds stays readable, and the failure is
recorded in ``failed`` for the run to stop on and report.
"""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Iterator
from pathlib import Path

from ..errors import CollectError

CREATE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
DIRECTORY = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
NOT_EMPTY = "exists and is not an empty directory (never overwritten)"


def _unsafe(st: os.stat_result) -> str | None:
    """Why a directory that exists may not take a bundle written by root; None when it may."""
    if stat.S_ISLNK(st.st_mode):
        return "is a symlink (never followed: give the directory itself)"
    if not stat.S_ISDIR(st.st_mode):
        return NOT_EMPTY
    if st.st_uid != 0:
        return "is not owned by root (someone else could plant files in it while collect runs)"
    if st.st_mode & 0o022:
        mode = stat.S_IMODE(st.st_mode)
        return f"is writable by group or others (mode {mode:04o}): only root may write it"
    return None


def check_out(path: Path) -> None:
    """Refuse an ``--out`` that exists and is not an empty directory only root can write."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if stat.S_ISDIR(st.st_mode) and os.listdir(path):
        raise CollectError(f"--out {path}: {NOT_EMPTY}")
    problem = _unsafe(st)
    if problem:
        raise CollectError(f"--out {path}: {problem}")


@contextlib.contextmanager
def dir_fd(root: int | str | os.PathLike) -> Iterator[int]:
    """A descriptor of ``root``: itself when it is one, else the directory opened for the block."""
    if isinstance(root, int):
        yield root
        return
    fd = os.open(root, DIRECTORY)
    try:
        yield fd
    finally:
        os.close(fd)


class OutDir:
    """One open directory of the bundle (the top or ``ip/<moment>``) and the failed writes."""

    def __init__(
        self, fd: int, path: Path, *, prefix: str = "", failed: list[tuple[str, str]] | None = None
    ) -> None:
        self.fd = fd
        self.path = path
        self.prefix = prefix
        #: (file relative to the bundle, why) for every write that failed, shared with subdirs.
        self.failed: list[tuple[str, str]] = [] if failed is None else failed

    @classmethod
    def create(cls, path: str | os.PathLike) -> OutDir:
        """Make ``path`` (mode 0700) or take it when it is an empty directory only root can
        write; raises CollectError otherwise. Checked again through the open descriptor, so a
        name swapped between the check and the open is refused too."""
        path = Path(path)
        check_out(path)
        if not os.path.lexists(path):
            path.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.mkdir(path, 0o700)
            except FileExistsError:
                raise CollectError(f"--out {path}: appeared while collect was starting") from None
        try:
            fd = os.open(path, DIRECTORY)
        except OSError as exc:
            raise CollectError(f"--out {path}: cannot open it: {exc.strerror or exc}") from None
        problem = _unsafe(os.fstat(fd)) or (NOT_EMPTY if os.listdir(fd) else None)
        if problem:
            os.close(fd)
            raise CollectError(f"--out {path}: {problem}")
        return cls(fd, path)

    @classmethod
    def existing(cls, path: str | os.PathLike) -> OutDir:
        """An existing directory, unchecked (tests)."""
        return cls(os.open(path, DIRECTORY), Path(path))

    def subdir(self, name: str) -> OutDir:
        """``name`` inside this directory, made (0700) when missing; never through a symlink."""
        with contextlib.suppress(FileExistsError):
            os.mkdir(name, 0o700, dir_fd=self.fd)
        fd = os.open(name, DIRECTORY, dir_fd=self.fd)
        return OutDir(fd, self.path / name, prefix=f"{self.prefix}{name}/", failed=self.failed)

    def fail(self, name: str, exc: OSError) -> None:
        """Record a write that failed (once per file)."""
        where = self.prefix + name
        if all(listed != where for listed, _ in self.failed):
            self.failed.append((where, exc.strerror or str(exc)))

    def write(self, name: str, data: str | bytes) -> bool:
        """A new file ``name`` holding ``data`` (0600); False, nothing left and the failure
        recorded when it could not be written whole."""
        raw = data.encode() if isinstance(data, str) else data
        try:
            fd = os.open(name, CREATE, 0o600, dir_fd=self.fd)
        except OSError as exc:
            self.fail(name, exc)
            return False
        try:
            _write_all(fd, raw)
        except OSError as exc:
            with contextlib.suppress(OSError):
                os.unlink(name, dir_fd=self.fd)
            self.fail(name, exc)
            return False
        finally:
            os.close(fd)
        return True

    def lines(self, name: str) -> LineFile | None:
        """A new log ``name`` written line by line; None (recorded) when it cannot be made."""
        try:
            fd = os.open(name, CREATE, 0o600, dir_fd=self.fd)
        except OSError as exc:
            self.fail(name, exc)
            return None
        return LineFile(fd, name, self)

    def remove_if_empty(self, name: str) -> bool:
        """Remove the subdirectory ``name`` when nothing could be written in it."""
        try:
            os.rmdir(name, dir_fd=self.fd)
        except OSError:
            return False
        return True

    def files(self) -> list[str]:
        """Every regular file below, relative to this directory, sorted."""
        out = []
        for top, _dirs, names, fd in os.fwalk(dir_fd=self.fd):
            for name in names:
                try:
                    st = os.stat(name, dir_fd=fd, follow_symlinks=False)
                except OSError:
                    continue
                if stat.S_ISREG(st.st_mode):
                    out.append(os.path.normpath(os.path.join(top, name)))
        return sorted(out)

    def space_left(self) -> int:
        """Bytes an unprivileged user may still write on this file system (``df``'s Available)."""
        st = os.fstatvfs(self.fd)
        return st.f_bavail * st.f_frsize

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __enter__(self) -> OutDir:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class LineFile:
    """A log of the bundle (``kern.dmesg``, ``changes.log``) that ends on a whole line: a write
    that fails is cut back, and nothing more is written to it."""

    def __init__(self, fd: int, name: str, where: OutDir) -> None:
        self.fd = fd
        self.name = name
        self.where = where
        self.size = 0
        self.broken = False

    def append(self, data: bytes) -> bool:
        """Write ``data`` (whole lines); False when it was not written."""
        if self.broken or self.fd < 0:
            return False
        try:
            _write_all(self.fd, data)
        except OSError as exc:
            self.broken = True
            with contextlib.suppress(OSError):
                os.ftruncate(self.fd, self.size)
            self.where.fail(self.name, exc)
            return False
        self.size += len(data)
        return True

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]
