"""Opening user-named files (reference audio, checkpoints) only when they are regular files.

A path may name a FIFO, a device (``/dev/zero``), a socket or a directory. Reading a FIFO blocks
until someone writes to it, and ``/dev/zero`` never ends, so a node that hashed or decoded such a
path before checking would hang for ever. We open with ``O_NONBLOCK`` (so even opening a FIFO
returns at once), then ``fstat`` the open descriptor: the check and the read see the same file,
whatever happens to the path in between. Regular files ignore ``O_NONBLOCK``; it is cleared anyway.
"""

from __future__ import annotations

import os
import stat
from typing import BinaryIO

_KINDS = (
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISFIFO, "a FIFO (named pipe)"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


def file_kind(mode: int) -> str:
    """What a non-regular ``st_mode`` is, in words."""
    for test, words in _KINDS:
        if test(mode):
            return words
    return "not a regular file"


def open_regular_file(path: str, max_bytes: int, what: str, error: type[Exception]) -> BinaryIO:
    """``path`` opened for binary reading, after checking it is a regular file of at most ``max_bytes``.

    Every refusal is ``error(one line naming path)``; ``what`` names the file's role
    (e.g. "reference audio") in those lines.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise error(f"{path}: {what} file not found") from None
    except OSError as e:
        raise error(f"{path}: cannot read {what} ({e.strerror or e})") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise error(f"{path}: {what} path is not a file ({file_kind(info.st_mode)})")
        if info.st_size > max_bytes:
            raise error(
                f"{path}: {what} file is too large ({info.st_size / 2**20:.1f} MiB; at most {max_bytes / 2**20:.0f} MiB)"
            )
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise
