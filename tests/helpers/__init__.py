"""Helpers shared by the tests: copies of the repository and Snakemake runs (repo.py), the DDP job
run under torchrun (ddp_job.py), synthetic image lists (imagelist_data.py), and files forged
through the project's own artifact writers (forge.py)."""
