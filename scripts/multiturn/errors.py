"""The one error type a user can act on."""


class UserError(Exception):
    """A problem the user can fix (bad data, bad setting, a template that cannot render the data).
    The scripts print it as one ERROR line, without a traceback."""
