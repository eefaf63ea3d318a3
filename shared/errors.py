"""The base class of errors caused by user input rather than by a bug."""


class UserError(Exception):
    """Bad input or state the user can fix; entry points print it without a traceback."""
