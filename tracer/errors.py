"""The one exception type for a user's mistake: its message is a single line saying what to do."""


class TracerError(Exception):
    """Bad input or a missing tool. The CLI prints the message alone and exits non-zero."""
