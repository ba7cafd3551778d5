"""User-facing errors.

A `ZooError` is a mistake in what the user asked for (a missing path, an empty corpus, a prompt
longer than the context...). Its message names the problem and the fix in one line; the `zoo`
CLI prints it without a traceback and exits with status 2.
"""


class ZooError(Exception):
    """An error caused by user input, reported as one readable line."""
