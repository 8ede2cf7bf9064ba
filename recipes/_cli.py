"""One way for every recipe's ``main()`` to fail on bad input: one ``error: …`` line, exit 2.

A user's mistake (a missing file, a bad value, a checkpoint of another run, a full disk) is
reported as one line on stderr, without a traceback; anything else is a bug and keeps its
traceback. argparse's own errors already print ``usage`` and one ``error:`` line.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import Any

#: Exceptions that mean bad input or a bad environment, not a bug (``OSError``: a missing or
#: unwritable path, a full disk). Besides them only the checkpoint's
#: ``DamagedCheckpointError`` (checked by name: this module imports nothing of the library).
USER_ERRORS = (ValueError, OSError)


def _is_user_error(e: BaseException) -> bool:
    return isinstance(e, USER_ERRORS) or type(e).__name__ == "DamagedCheckpointError"


def one_line(e: BaseException) -> str:
    """The exception's message on one line."""
    text = " ".join(str(e).split())
    return text or type(e).__name__


def command(main: Callable[..., Any]) -> Callable[..., Any]:
    """Decorates a recipe's ``main(argv=None)``: user errors become ``error: …`` + return 2.

    Run it as ``raise SystemExit(exit_code(main()))`` so that the 2 reaches the shell.
    """

    @functools.wraps(main)
    def wrapped(*args, **kwargs):
        try:
            return main(*args, **kwargs)
        except Exception as e:  # noqa: BLE001 (sorted below: bugs re-raised)
            if not _is_user_error(e):
                raise
            print(f"error: {one_line(e)}", file=sys.stderr, flush=True)
            return 2

    return wrapped


def exit_code(result: Any) -> int:
    """The process exit status of a ``main()`` result: an int as is, anything else 0."""
    return result if isinstance(result, int) and not isinstance(result, bool) else 0
