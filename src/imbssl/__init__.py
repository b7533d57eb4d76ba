"""imbssl: measure and fix what class imbalance does to self-supervised pretraining."""

__version__ = "0.2.0"


class UserError(Exception):
    """A problem the user can fix (bad input, missing file): the CLI prints it as one line."""
