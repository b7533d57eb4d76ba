"""imbssl: measure and fix what class imbalance does to self-supervised pretraining."""

__version__ = "0.1.0"


class UserError(Exception):
    """A problem the user can fix (bad input, missing file): the CLI prints it as one line."""


class Stopped(Exception):
    """A training job stopped on a signal after writing a checkpoint at its last step (its message
    says where, and whether SLURM requeues it); rerun, it resumes from there."""

    # EX_TEMPFAIL (sysexits.h): a temporary failure, to be retried. A SLURM administrator can list
    # it in RequeueExit to have such jobs requeued by SLURM itself.
    exit_status = 75
