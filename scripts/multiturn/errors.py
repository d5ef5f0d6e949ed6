"""The one error type a user can act on."""


class UserError(Exception):
    """A problem the user can fix (bad data, bad setting, a template that cannot render the data).
    The scripts print it as one ERROR line, without a traceback. `detail`, where given, is what differs from one
    instance of the same problem to the next (where in the text): reports count the problem without it."""

    def __init__(self, message: str = "", detail: str = ""):
        super().__init__(message + (f": {detail}" if detail else ""))
        self.kind, self.detail = message, detail


def run(main) -> None:
    """A script's entry point: a UserError is one ERROR line and exit status 2, Ctrl-C exit status 130, neither
    with a traceback."""
    import sys

    try:
        main()
    except UserError as error:
        print(f"ERROR: {error}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print(file=sys.stderr)
        sys.exit(130)
