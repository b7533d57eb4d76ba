# The hidden uniform prior, measured: the cluster sizes each model's features imply (k-means with
# K = classes), on every imbalanced subset and its balanced twin, and the table and figure.


rule cluster_sizes:
    input:
        model=rules.pretrain.output.model,
        train=rules.prepare_data.output.train,
        subset="results/subsets/{subset}.csv",
    output:
        "results/prior/{subset}/{method}/seed{seed}.json",
    log:
        "results/logs/cluster_sizes/{subset}/{method}/seed{seed}.log",
    benchmark:
        "results/benchmarks/cluster_sizes/{subset}/{method}/seed{seed}.tsv"
    wildcard_constraints:
        subset="|".join(map(re.escape, PRIOR_SUBSETS)) or "(?!)",
        method="|".join(METHODS),
    conda:
        "../../envs/cuml.yaml"
    threads: 1
    resources:
        **SMALL_GPU_JOB,
        mem_mb=8000,
        runtime=30,
    params:
        kmeans=cli_flags(config["prior_clusters"]),
        device=cli_flags({"device": config["pretrain"]["device"]}),
        code=command_code_hash("cluster-sizes"),
    shell:
        on_gpu(
            "imbssl cluster-sizes --model {input.model} --train-data {input.train} --subset {input.subset}"
            " --subset-name {wildcards.subset} --method {wildcards.method} --seed {wildcards.seed}"
            " --out {output} {params.kmeans} {params.device} > {log} 2>&1"
        )


rule prior_table:
    input:
        clusters=PRIOR_CLUSTER_FILES,
        usage=PRIOR_USAGE_FILES,
    output:
        **table_outputs("prior", "Hidden uniform prior", "Implied cluster sizes"),
    log:
        "results/logs/prior_table.log",
    benchmark:
        "results/benchmarks/prior_table.tsv"
    localrule: True
    conda:
        "../../envs/pytorch.yaml"
    params:
        title=table_title(
            "The hidden prior: how evenly each method's features cluster the data, against the classes"
        ),
        code=command_code_hash("prior-table"),
    shell:
        "imbssl prior-table --clusters {input.clusters} --usage {input.usage} --title {params.title:q}"
        " --out-csv {output.csv} --out-md {output.md} --out-html {output.html} > {log} 2>&1"


rule prior_figure:
    input:
        PRIOR_CLUSTER_FILES,
    output:
        png=report(
            "results/figures/prior_cluster_sizes.png",
            caption="../report/prior_clusters.rst",
            category="Hidden uniform prior",
            subcategory="Implied cluster sizes",
        ),
        pdf="results/figures/prior_cluster_sizes.pdf",
    log:
        "results/logs/prior_figure.log",
    benchmark:
        "results/benchmarks/prior_figure.tsv"
    localrule: True
    conda:
        "../../envs/pytorch.yaml"
    params:
        title="Cluster sizes the features imply (k-means, K = classes) against the class sizes",
        plots=cli_flags(config["plots"]),
        code=command_code_hash("figure-prior"),
    shell:
        "imbssl figure-prior --clusters {input} --title {params.title:q} {params.plots}"
        " --out {output.png} {output.pdf} > {log} 2>&1"
