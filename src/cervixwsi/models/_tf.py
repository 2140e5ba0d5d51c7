"""TensorFlow and Keras for cervixwsi.models: imported here, once, without load-time notes.

Every module of :mod:`cervixwsi.models` takes ``tf`` and ``keras`` from here
(``from cervixwsi.models._tf import tf``), inside the functions that need them, so
``import cervixwsi.models`` stays free of TensorFlow and the first use imports it
through :func:`_load`.

``cervixwsi.models`` sets ``TF_CPP_MIN_LOG_LEVEL=3`` unless the user chose a level, and
TensorFlow applies it to the C++ log lines it writes once running, such as
``E0000 ... oneDNN supports DT_UINT8 only on platforms with AVX-512. Falling back to
the default Eigen-based implementation``, a note that a uint8 operation runs on the
ordinary kernels, not a failure.  But its libraries log a note while they load,
before they read the level: ``I0000 ... oneDNN custom operations are on ...``, once
per library that holds oneDNN (twice), each after absl's ``WARNING: All log messages
before absl::InitializeLog() is called are written to STDERR``.  So the import runs
with the process's standard error (file descriptor 2, where C++ writes) sent to a
temporary file, and everything it caught is written back to standard error
afterwards except the log lines below the level and absl's note about them: the level
then applies to every TensorFlow C++ log line.  With ``TF_CPP_MIN_LOG_LEVEL=0`` (all
logs, e.g. to debug an import that crashes) nothing is caught.

Right after the import, before TensorFlow runs anything, memory growth is turned on on
every GPU it sees (:func:`cervixwsi.models._devices.configure_memory_growth`), unless
``CERVIXWSI_TF_MEMORY_GROWTH=0`` or the GPUs were configured before.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import tempfile
from collections.abc import Iterator
from typing import Any

__all__ = ["keras", "tf"]

# An absl/TensorFlow C++ log line: severity, date, time, thread, file:line], e.g.
# "I0000 00:00:1796214149.292638    9189 port.cc:153] oneDNN custom operations are on."
_LOG_LINE = re.compile(rb"([IWEF])\d{4} [\d:.]+\s+\d+ \S+:\d+\] ")
_SEVERITY = {b"I": 0, b"W": 1, b"E": 2, b"F": 3}
_ABSL_NOTE = b"WARNING: All log messages before absl::InitializeLog() is called"


def min_log_level() -> int:
    """The level in ``TF_CPP_MIN_LOG_LEVEL`` (0 when unset or not a number, like TensorFlow).

    Examples
    --------
    >>> import os
    >>> min_log_level() == int(os.environ.get("TF_CPP_MIN_LOG_LEVEL", "0"))
    True
    """
    match = re.match(r"\s*[+-]?\d+", os.environ.get("TF_CPP_MIN_LOG_LEVEL", ""))
    return int(match.group()) if match else 0


def hidden(line: bytes, level: int) -> bool:
    """True for a C++ log line below ``level``, or absl's note before such lines.

    Examples
    --------
    >>> note = b"I0000 00:00:17.5   81 port.cc:153] oneDNN custom operations are on.\\n"
    >>> hidden(note, 3), hidden(note, 0), hidden(b"Traceback (most recent call last):\\n", 3)
    (True, False, False)
    """
    if level <= 0:
        return False
    if line.startswith(_ABSL_NOTE):
        return True
    match = _LOG_LINE.match(line)
    return match is not None and _SEVERITY[match.group(1)] < level


def _write_fd(fd: int, data: bytes) -> None:
    while data:
        data = data[os.write(fd, data) :]


@contextlib.contextmanager
def native_log_filtered(level: int) -> Iterator[None]:
    """Catch what is written to file descriptor 2 in the block; write back what is not hidden.

    Python's ``sys.stderr`` is flushed first and last, so its lines keep their place.
    Without a usable descriptor 2 (or at level 0) the block runs as it is.

    Examples
    --------
    >>> import os
    >>> with native_log_filtered(3):
    ...     _ = os.write(2, b"I0000 00:00:17.5   81 port.cc:153] a load-time note\\n")
    """
    if level <= 0:
        yield
        return
    with contextlib.suppress(AttributeError, OSError, ValueError):
        sys.stderr.flush()
    try:
        saved = os.dup(2)
    except OSError:  # no standard error at all
        yield
        return
    try:
        with tempfile.TemporaryFile() as caught:
            os.dup2(caught.fileno(), 2)
            try:
                yield
            finally:
                with contextlib.suppress(AttributeError, OSError, ValueError):
                    sys.stderr.flush()
                os.dup2(saved, 2)
                caught.seek(0)
                lines = caught.read().splitlines(keepends=True)
                _write_fd(2, b"".join(line for line in lines if not hidden(line, level)))
    finally:
        os.close(saved)


def _load() -> tuple[Any, Any]:
    """Import TensorFlow and Keras (see the module docstring); turn on GPU memory growth."""
    with native_log_filtered(min_log_level()):
        import keras as keras_module
        import tensorflow
    from cervixwsi.models._devices import configure_memory_growth

    configure_memory_growth(tensorflow)  # before any operation; CERVIXWSI_TF_MEMORY_GROWTH=0: not
    return tensorflow, keras_module


tf, keras = _load()
