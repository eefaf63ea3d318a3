"""The base class of errors caused by user input rather than by a bug, and shared messages."""


class UserError(Exception):
    """Bad input or state the user can fix; entry points print it without a traceback."""


def no_run_directory(path: str) -> str:
    """The message for a ``--run-dir`` that does not exist, with what to do instead."""
    return f"No run directory at {path}. Train first, or pass an existing --run-dir."
