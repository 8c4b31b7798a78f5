"""Native libraries (TensorFlow's C++ logging) write to file descriptor 2 directly; these
helpers point that descriptor elsewhere so a terminal display stays readable."""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

from tuner.errors import TunerError


@contextlib.contextmanager
def captured_stderr() -> Iterator[None]:
    """Hold back what is written to stderr inside; replay it only if an unexpected error
    escapes (it may explain it). A user's error (`TunerError`, `ValueError`: what the CLI
    prints as one line) says all there is to say."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as buffer:
        os.dup2(buffer.fileno(), 2)
        try:
            yield
        except (TunerError, ValueError):
            raise
        except BaseException:
            sys.stderr.flush()
            os.dup2(saved, 2)
            buffer.seek(0)
            os.write(2, buffer.read())
            raise
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)


def redirect_output(path: Path) -> None:
    """Send this process's stdout and stderr, native writes included, to `path`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    for stream, target in ((sys.stdout, 1), (sys.stderr, 2)):
        stream.flush()
        os.dup2(fd, target)
    os.close(fd)


def tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""
