"""The one error type a user can act on."""


class UserError(Exception):
    """A problem the user can fix (bad data, bad setting, a template that cannot render the data).
    The scripts print it as one ERROR line, without a traceback."""


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
