"""imbssl: measure and fix what class imbalance does to self-supervised pretraining."""

__version__ = "0.2.0"


class UserError(Exception):
    """A problem the user can fix (bad input, missing file): the CLI prints it as one line."""


class Stopped(Exception):
    """A training job stopped on a signal after writing a checkpoint at its last step (its message
    says where, and whether SLURM requeues it); rerun, it resumes from there."""

    # EX_TEMPFAIL (sysexits.h): a temporary failure, to be retried. Under Snakemake it only says
    # "failed" to Snakemake (the SLURM job's own exit status is Snakemake's), so the job requeues
    # itself when it should (training/preemption.py) rather than relying on SLURM's RequeueExit.
    exit_status = 75
