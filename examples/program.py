"""A trainer as a command-line program: absl's `app.run`, with logging and errors for its user.

    if __name__ == "__main__":
        program.run(main)

`run` differs from `app.run` in two ways: `--help` exits 0 (asking for help is no failure), and
an `app.UsageError` is its one-line message, not the module's docstring and every flag. Inside
`main`, `configure_logging()` prints each log line once, and `exit_with_message(...)` ends the
program with the message of an error that already says what to do.
"""

from __future__ import annotations

import contextlib
import logging as standard_logging
import sys
import textwrap

import tensorflow as tf
from absl import app, flags, logging


def run(main) -> None:
    """`app.run(main)`, with help that exits 0 and usage errors printed as their message alone.

    `main` itself still raises the `app.UsageError`, for callers and tests; the program prints
    `UsageError: <message>` on stderr and exits with the error's status (1).
    """

    def main_with_short_usage_errors(argv):
        try:
            return main(argv)
        except app.UsageError as error:
            print(f"UsageError: {error}", file=sys.stderr, flush=True)
            raise SystemExit(error.exitcode) from None

    app.run(main_with_short_usage_errors, flags_parser=_parse_flags)


def configure_logging() -> None:
    """Python logging at WARNING unless `--verbosity` is given, each line printed once.

    TensorFlow gives its `tensorflow` logger a stderr handler of its own when it is imported,
    and its records also reach absl's handler on the root logger: each line would come out
    twice. Removing TensorFlow's handler, as absl does for the root logger's, leaves absl's.
    """
    if not flags.FLAGS["verbosity"].present:
        logging.set_verbosity(logging.WARNING)
    if logging.get_absl_handler() in standard_logging.getLogger().handlers:
        tf_logger = tf.get_logger()
        for handler in list(tf_logger.handlers):
            if isinstance(handler, standard_logging.StreamHandler) and handler.stream in (
                sys.stderr,
                sys.stdout,
            ):
                tf_logger.removeHandler(handler)


@contextlib.contextmanager
def exit_with_message(*error_types):
    """Ends the program with the message of an error of `error_types` alone, exit status 1.

    For errors whose message names the problem and its fix (a damaged checkpoint, a model that
    does not match `--model_dir`): a traceback would bury it.
    """
    try:
        yield
    except error_types as error:
        raise SystemExit(f"{type(error).__name__}: {error}") from error


def _parse_flags(argv: list[str]) -> list[str]:
    """absl's flags parser (`app.parse_flags_with_usage`), with help exiting 0.

    absl's help flags print the help and end the program, while the command line is parsed,
    with status 1; that becomes 0. A bad flag value still ends it with status 1 and absl's
    report, `FATAL Flags parsing error: <message>`.
    """
    try:
        return flags.FLAGS(argv)
    except SystemExit as help_exit:
        # Only the help flags exit from inside the parse (after printing the help).
        raise SystemExit(0 if help_exit.code == 1 else help_exit.code) from None
    except flags.Error as error:
        # Printed as app.parse_flags_with_usage prints it.
        message = str(error)
        if "\n" in message:
            sys.stderr.write(f"FATAL Flags parsing error:\n{textwrap.indent(message, '  ')}\n")
        else:
            sys.stderr.write(f"FATAL Flags parsing error: {message}\n")
        sys.stderr.write("Pass --helpshort or --helpfull to see help on flags.\n")
        raise SystemExit(1) from None
