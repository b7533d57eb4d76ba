# Experiment II, up to the experts, per subset in clustering.subsets and seed:
# base SimSiam -> its features -> k-means (and a random partition of the same sizes)
# -> one SimSiam expert per part. The K experts are independent jobs.


use rule pretrain as base with:
    input:
        train=rules.prepare_data.output.train,
        test=rules.prepare_data.output.test,
        subset="results/subsets/{subset}.csv",
    output:
        model=f"{CLUSTER_DIR}/base/model.pt",
        metrics=f"{CLUSTER_DIR}/base/metrics.csv",
    log:
        "results/logs/base/{subset}/seed{seed}.log",
    benchmark:
        "results/benchmarks/base/{subset}/seed{seed}.tsv"
    wildcard_constraints:
        subset="|".join(map(re.escape, SUBSETS)),
    resources:
        **PRETRAIN_GPUS,
        mem_mb=16000,
        runtime=runtime_for(config["clustering"]["base_epochs"]),
    params:
        method=CLUSTERING_METHOD,
        settings=stage_flags("base"),
        code=pretrain_code(CLUSTERING_METHOD),


rule features:
    input:
        model=rules.base.output.model,
        train=rules.prepare_data.output.train,
        subset="results/subsets/{subset}.csv",
    output:
        f"{CLUSTER_DIR}/features.pt",
    log:
        "results/logs/features/{subset}/seed{seed}.log",
    benchmark:
        "results/benchmarks/features/{subset}/seed{seed}.tsv"
    conda:
        "../../envs/pytorch.yaml"
    threads: 1
    resources:
        **SMALL_GPU_JOB,
        mem_mb=8000,
        runtime=30,
    params:
        device=cli_flags({"device": config["pretrain"]["device"]}),
        features=cli_flags({"features": config["clustering"]["features"]}),
        code=command_code_hash("features"),
    shell:
        on_gpu(
            "imbssl features --model {input.model} --train-data {input.train}"
            " --subset {input.subset} --out {output} {params.device} {params.features} > {log} 2>&1"
        )


rule cluster:
    input:
        features=rules.features.output[0],
        train=rules.prepare_data.output.train,
        subset="results/subsets/{subset}.csv",
    output:
        **partition_files("kmeans"),
        pca=f"{CLUSTER_DIR}/kmeans/pca.csv",
    log:
        "results/logs/cluster/{subset}/seed{seed}.log",
    benchmark:
        "results/benchmarks/cluster/{subset}/seed{seed}.tsv"
    conda:
        "../../envs/cuml.yaml"
    threads: 1
    resources:
        **SMALL_GPU_JOB,
        mem_mb=8000,
        runtime=30,
    params:
        kmeans=cli_flags(
            {
                key: config["clustering"][key]
                for key in ("k", "backend", "n_init", "max_iter", "normalize")
            }
        ),
        out_dir=subpath(output.summary, parent=True),
        code=command_code_hash("cluster"),
    shell:
        on_gpu(
            "imbssl cluster --features {input.features} --subset {input.subset}"
            " --train-data {input.train} --subset-name {wildcards.subset} --seed {wildcards.seed}"
            " --out-dir {params.out_dir} {params.kmeans} > {log} 2>&1"
        )


# The +D ablation's partition: seconds of numpy, run on the submitting host.
rule partition_random:
    input:
        clusters=rules.cluster.output.assignments,
        summary=rules.cluster.output.summary,
        train=rules.prepare_data.output.train,
        subset="results/subsets/{subset}.csv",
    output:
        **partition_files("random"),
    log:
        "results/logs/partition_random/{subset}/seed{seed}.log",
    benchmark:
        "results/benchmarks/partition_random/{subset}/seed{seed}.tsv"
    localrule: True
    conda:
        "../../envs/pytorch.yaml"
    params:
        clusters_dir=subpath(input.clusters, parent=True),
        out_dir=subpath(output.summary, parent=True),
        code=command_code_hash("partition-random"),
    shell:
        "imbssl partition-random --clusters-dir {params.clusters_dir} --subset {input.subset}"
        " --train-data {input.train} --subset-name {wildcards.subset} --seed {wildcards.seed}"
        " --out-dir {params.out_dir} > {log} 2>&1"


use rule pretrain as expert with:
    input:
        unpack(expert_inputs),
    output:
        model="results/experts/{subset}/{kind}/seed{seed}/cluster{cluster}/model.pt",
        metrics="results/experts/{subset}/{kind}/seed{seed}/cluster{cluster}/metrics.csv",
    log:
        "results/logs/expert/{subset}/{kind}/seed{seed}/cluster{cluster}.log",
    benchmark:
        "results/benchmarks/expert/{subset}/{kind}/seed{seed}/cluster{cluster}.tsv"
    wildcard_constraints:
        subset="|".join(map(re.escape, SUBSETS)),
    resources:
        **EXPERT_GPUS,
        mem_mb=16000,
        runtime=runtime_for(config["clustering"]["expert_epochs"]),
    params:
        method=CLUSTERING_METHOD,
        settings=stage_flags("expert"),
        init=lambda wildcards, input: (
            f"--init {input.init}" if "init" in input.keys() else ""
        ),
        code=pretrain_code(CLUSTERING_METHOD),
