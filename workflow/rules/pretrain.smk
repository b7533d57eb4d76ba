# Pretraining of one method on one subset with one seed. Experiment II's base and expert models
# are SimSiam pretraining jobs too (cluster.smk derives them from this rule).


rule pretrain:
    input:
        train=rules.prepare_data.output.train,
        test=rules.prepare_data.output.test,
        subset="results/subsets/{subset}.csv",
    output:
        model="results/pretrain/{subset}/{method}/seed{seed}/model.pt",
        metrics="results/pretrain/{subset}/{method}/seed{seed}/metrics.csv",
    log:
        "results/logs/pretrain/{subset}/{method}/seed{seed}.log",
    benchmark:
        "results/benchmarks/pretrain/{subset}/{method}/seed{seed}.tsv"
    wildcard_constraints:
        # The students of Experiment II live beside them but come from the distill rule.
        method="|".join(METHODS),
    conda:
        "../../envs/pytorch.yaml"
    # The GPU does the work; on CPUs (the demo) one thread per job and jobs side by side is fastest.
    # Snakemake exports OMP_NUM_THREADS={threads}; profiles raise it with set-threads.
    threads: 1
    resources:
        **PRETRAIN_GPUS,
        mem_mb=16000,
        runtime=pretrain_runtime,
    params:
        method=lambda wildcards: wildcards.method,
        settings=lambda wildcards: pretrain_flags(wildcards.method),
        init="",
        out_dir=subpath(output.model, parent=True),
        code=lambda wildcards: pretrain_code(wildcards.method),
    shell:
        on_gpu(
            "imbssl pretrain --method {params.method} --seed {wildcards.seed}"
            " --train-data {input.train} --test-data {input.test} --subset {input.subset} {params.init}"
            " --out-dir {params.out_dir} {params.settings} > {log} 2>&1"
        )
