"""Files a user names on the command line: regular files under a size cap for their kind, text read line by line.

A FIFO, a device (``/dev/zero``), a socket or a directory given where a file is expected
would hang a read or grow it without bound, so every such path is resolved (symlinks
followed; a loop is refused) and opened non-blocking, and the open file itself is checked
(``fstat``: no window between a check and the open for a swap to a FIFO). Text files are
read one line at a time with a cap on the line's length and on the number of lines, so
the memory a read may take is bounded before it starts. Contract wing: no torch.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import BinaryIO

from .errors import LatentzooError

# Size caps by kind: generous for any real input, far below what would take the machine down.
MAX_BYTES = {
    "text": 16 << 20,  # prompts, label lists: 16 MiB is ~100k long prompts
    "config": 16 << 20,  # YAML / JSON configs
    "image": 512 << 20,  # an encoded image file (Pillow's own pixel cap guards decoding)
    "latents": 4 << 30,
    "weights": 64 << 30,  # the largest single checkpoint file a converter takes
}
MAX_LINE_CHARS = 16 << 10  # a prompt far beyond any tokenizer's context (CLIP takes 77 tokens)
MAX_LINES = 100_000

_KINDS = {stat.S_IFIFO: "a FIFO", stat.S_IFCHR: "a character device", stat.S_IFBLK: "a block device", stat.S_IFSOCK: "a socket"}


def _not_regular(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "a directory"
    return _KINDS.get(stat.S_IFMT(mode), "not a regular file")


def _human(n: int) -> str:
    return f"{n >> 30} GiB" if n >= 1 << 30 else f"{n >> 20} MiB"


def resolve(path: str | Path, what: str) -> Path:
    """``path`` with symlinks resolved; a missing file or a symlink loop is one line naming ``what``."""
    try:
        return Path(path).resolve(strict=True)
    except FileNotFoundError as exc:
        raise LatentzooError(f"cannot read {what} {path}: it does not exist (no such file); give an existing file") from exc
    except RuntimeError as exc:  # Python < 3.13: "Symlink loop from ..."
        raise LatentzooError(f"{what} {path} is a symlink loop; point it at a real file") from exc
    except OSError as exc:
        if exc.errno == 40:  # ELOOP
            raise LatentzooError(f"{what} {path} is a symlink loop; point it at a real file") from exc
        raise LatentzooError(f"cannot read {what} {path}: {exc.strerror or exc}") from exc


def check_file(path: str | Path, what: str, kind: str) -> Path:
    """The resolved path of a regular file no larger than the cap for ``kind``; anything else is refused in one line."""
    real = resolve(path, what)
    try:
        info = real.stat()
    except OSError as exc:
        raise LatentzooError(f"cannot read {what} {path}: {exc.strerror or exc}") from exc
    _check_stat(info, path, what, kind)
    return real


def _check_stat(info: os.stat_result, path: str | Path, what: str, kind: str) -> None:
    if not stat.S_ISREG(info.st_mode):
        raise LatentzooError(f"{what} {path} is {_not_regular(info.st_mode)}, not a regular file; give a file")
    cap = MAX_BYTES[kind]
    if info.st_size > cap:
        raise LatentzooError(
            f"{what} {path} is {info.st_size} bytes, larger than {_human(cap)} (the limit for a {kind} file); give a smaller file"
        )


def open_file(path: str | Path, what: str, kind: str) -> BinaryIO:
    """Open a regular file for reading, checked on the open descriptor itself (a FIFO never blocks the open)."""
    real = resolve(path, what)
    try:
        fd = os.open(real, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0))
    except IsADirectoryError as exc:
        raise LatentzooError(f"{what} {path} is a directory, not a regular file; give a file") from exc
    except OSError as exc:
        raise LatentzooError(f"cannot read {what} {path}: {exc.strerror or exc}") from exc
    try:
        _check_stat(os.fstat(fd), path, what, kind)
        if hasattr(os, "set_blocking"):
            os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def read_lines(path: str | Path, what: str, *, max_lines: int = MAX_LINES, max_chars: int = MAX_LINE_CHARS) -> list[str]:
    """A UTF-8 text file's non-blank lines, stripped; at most ``max_lines`` of at most ``max_chars`` each.

    Reads one line at a time (``readline`` with a limit), so a file without newlines costs at
    most one line's worth of memory before it is refused.
    """
    limit = max_chars * 4 + 2  # bytes: a UTF-8 character is at most 4
    out: list[str] = []
    with open_file(path, what, "text") as f:
        for n in range(1, MAX_BYTES["text"] + 2):
            raw = f.readline(limit)
            if not raw:
                break
            long = f"{what} {path}:{n}: a line longer than {max_chars} characters; one entry per line, shorter"
            if len(raw) == limit and not raw.endswith(b"\n"):
                raise LatentzooError(long)
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise LatentzooError(
                    f"cannot read {what} {path}:{n}: not UTF-8 text (byte 0x{raw[exc.start]:02x}); save it as UTF-8"
                ) from exc
            if len(line.rstrip("\r\n")) > max_chars:
                raise LatentzooError(long)
            line = line.strip()
            if line:
                if len(out) == max_lines:
                    raise LatentzooError(f"{what} {path} holds more than {max_lines} lines; split it")
                out.append(line)
    return out
