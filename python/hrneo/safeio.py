"""Reading files an administrator (or an attacker with write access to a list
directory) names: regular files only, with a size cap, never blocking.

A config or list path may name anything: ``/dev/zero`` (an endless read), a
FIFO (``open`` blocks until a writer comes), a directory, a 2 GB file. Each of
these is refused here with a :class:`FileRefused` that says what the path is,
before a byte is read; ``open`` itself uses ``O_NONBLOCK``, so a FIFO cannot
hang the daemon's reload.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from typing import BinaryIO

MIB = 1024 * 1024
# hrneo.yaml: 100,000 inline domains are about 2.5 MB; lists belong in domain_files.
MAX_CONFIG_BYTES = 16 * MIB
# One list file: about 3 million names of 20 characters.
MAX_LIST_BYTES = 64 * MIB
# A domain name has at most 253 characters; a line may carry a comment too.
MAX_LINE_BYTES = 4096


class FileRefused(ValueError):
    """The path is not a regular file, or it is larger than its cap."""


def _kind(mode: int) -> str:
    for test, name in (
        (stat.S_ISDIR, "a directory"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISFIFO, "a FIFO"),
        (stat.S_ISSOCK, "a socket"),
    ):
        if test(mode):
            return name
    return "not a regular file"


def open_regular(path: str, limit: int) -> BinaryIO:
    """Open `path` for reading in binary mode if it is a regular file of at most
    `limit` bytes.

    Raises FileRefused (what the path is, or its size), OSError (cannot open)
    or ValueError (a NUL or an unencodable character in the path).
    """
    # O_NONBLOCK: opening a FIFO for reading returns at once instead of waiting
    # for a writer; O_NOCTTY: a terminal device never becomes ours.
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise FileRefused(f"{path} is {_kind(st.st_mode)}, not a regular file")
        if st.st_size > limit:
            raise FileRefused(f"{path} is {st.st_size} bytes, over the limit of {limit // MIB} MiB")
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def read_capped(path: str, limit: int) -> bytes:
    """The whole content of regular file `path`, at most `limit` bytes.

    A file that grows past `limit` while it is read (or a /proc file, whose
    size says 0) is refused all the same. Raises what :func:`open_regular` raises.
    """
    with open_regular(path, limit) as f:
        data = f.read(limit + 1)
    if len(data) > limit:
        raise FileRefused(f"{path} is over the limit of {limit // MIB} MiB")
    return data


def iter_lines(
    path: str, limit: int = MAX_LIST_BYTES, max_line: int = MAX_LINE_BYTES
) -> Iterator[tuple[int, str | None, str]]:
    """(line number, text, problem) for each line of regular file `path`.

    `text` is the decoded line without its newline, or None when `problem`
    says why it cannot be used (too long, a NUL byte, not UTF-8). The file is
    streamed; no more than `limit` bytes are read in total (FileRefused beyond).
    Raises what :func:`open_regular` raises, when opening.
    """
    total = 0
    with open_regular(path, limit) as f:
        for lineno, raw in enumerate(f, 1):
            total += len(raw)
            if total > limit:
                raise FileRefused(f"{path} is over the limit of {limit // MIB} MiB")
            if len(raw) > max_line:
                yield lineno, None, f"line longer than {max_line} bytes"
                continue
            if b"\0" in raw:
                yield lineno, None, "binary data (a NUL byte), not a text line"
                continue
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                yield lineno, None, f"not UTF-8 text (byte {e.start + 1} of the line)"
                continue
            yield lineno, text.rstrip("\r\n"), ""
