rule evaluate:
    input:
        model=rules.pretrain.output.model,
        train=rules.prepare_data.output.train,
        test=rules.prepare_data.output.test,
        eval_subset=eval_subset_csv,
        pretrain_subset="results/subsets/{subset}.csv",
    output:
        "results/eval/{subset}/{method}/seed{seed}.json",
    log:
        "results/logs/evaluate/{subset}/{method}/seed{seed}.log",
    benchmark:
        "results/benchmarks/evaluate/{subset}/{method}/seed{seed}.tsv"
    conda:
        "../../envs/pytorch.yaml"
    # The GPU does the work; on CPUs (the demo) one thread per job and jobs side by side is fastest.
    # Snakemake exports OMP_NUM_THREADS={threads}; profiles raise it with set-threads.
    threads: 1
    resources:
        **SMALL_GPU_JOB,
        mem_mb=8000,
        runtime=30,
    params:
        evaluation=cli_flags(config["evaluation"]),
        method_name=lambda wildcards: method_label(wildcards.method),
        # Recorded in the result's provenance: the report names the dataset its results come from.
        dataset=config["dataset"]["name"],
        code=command_code_hash("evaluate"),
    shell:
        on_gpu(
            "imbssl evaluate --model {input.model} --train-data {input.train} --test-data {input.test}"
            " --eval-subset {input.eval_subset} --pretrain-subset {input.pretrain_subset}"
            " --subset-name {wildcards.subset} --method-name {params.method_name:q}"
            " --dataset-name {params.dataset:q} --seed {wildcards.seed}"
            " --out {output} {params.evaluation} > {log} 2>&1"
        )


rule prototype_usage:
    input:
        model=rules.pretrain.output.model,
        train=rules.prepare_data.output.train,
        subset="results/subsets/{subset}.csv",
    output:
        "results/prototypes/{subset}/{method}/seed{seed}.json",
    log:
        "results/logs/prototype_usage/{subset}/{method}/seed{seed}.log",
    benchmark:
        "results/benchmarks/prototype_usage/{subset}/{method}/seed{seed}.tsv"
    wildcard_constraints:
        method="|".join(catalog.prototype_methods()),
    conda:
        "../../envs/pytorch.yaml"
    threads: 1
    resources:
        **SMALL_GPU_JOB,
        mem_mb=8000,
        runtime=30,
    params:
        # The settings the model was trained with (the prototypes' shapes), and where to run.
        settings=lambda wildcards: cli_flags(method_settings(wildcards.method)),
        device=cli_flags({"device": config["pretrain"]["device"]}),
        # the method's module too: its prototype_scores say which prototype an image uses
        code=lambda wildcards: command_code_hash("prototype-usage", wildcards.method),
    shell:
        on_gpu(
            "imbssl prototype-usage --method {wildcards.method} --model {input.model}"
            " --train-data {input.train} --subset {input.subset} --subset-name {wildcards.subset}"
            " --seed {wildcards.seed} --out {output}"
            " {params.device} {params.settings} > {log} 2>&1"
        )
