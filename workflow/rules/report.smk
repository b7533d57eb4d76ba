# Tables and figures come from result files only: seconds of work, run on the submitting host.
localrules:
    table2,
    figure1,
    table3,
    figure3,
    cluster_table,
    table4,
    figure4,


rule table2:
    input:
        result_jsons(),
    output:
        **table_outputs("table2", "Experiment I", "Table 2"),
        differences="results/tables/table2_differences.csv",
    log:
        "results/logs/table2.log",
    benchmark:
        "results/benchmarks/table2.tsv"
    conda:
        "../../envs/pytorch.yaml"
    params:
        methods=[method_label(method) for method in BASELINES],
        title=table_title(
            "Table 2: linear evaluation top-1 accuracy (%), mean ± std over seeds"
        ),
        # imbalanced-pX - balanced-pX of each method, paired by seed.
        differences=lambda wildcards, output: f"--imbalance-gaps --out-differences {output.differences}",
        code=TABLES_CODE,
    shell:
        "imbssl table --results {input} --methods {params.methods:q} --title {params.title:q}"
        " {params.differences} --out-csv {output.csv} --out-md {output.md} > {log} 2>&1"


use rule table2 as table3 with:
    input:
        result_jsons(CLUSTER_SUBSETS, [*BASELINES, *STUDENT_PARTITION]),
    output:
        **table_outputs("table3", "Experiment II", "Table 3"),
        differences="results/tables/table3_differences.csv",
    log:
        "results/logs/table3.log",
    benchmark:
        "results/benchmarks/table3.tsv"
    params:
        # The paper's columns; `n/a` where one was not run (e.g. simclr not in `methods`).
        methods=["SimCLR", "SimSiam", "SimSiam+C+D", "SimSiam+D"],
        title=table_title(
            "Table 3: linear evaluation top-1 accuracy (%), mean ± std over seeds"
        ),
        # The gains of the students over SimSiam on each subset, paired by seed.
        differences=lambda wildcards, output: (
            "--difference SimSiam+C+D SimSiam --difference SimSiam+D SimSiam"
            f" --out-differences {output.differences}"
        ),


use rule table2 as table4 with:
    input:
        result_jsons(
            methods=[*PRIOR_METHODS, *(["simsiam"] if "simsiam" in METHODS else [])]
        ),
    output:
        **table_outputs("table4", "Power-law prior", "Table 4"),
    log:
        "results/logs/table4.log",
    benchmark:
        "results/benchmarks/table4.tsv"
    params:
        methods=["MSN", "PMSN", "SimSiam"],
        title=table_title(
            "Table 4: MSN vs PMSN (SimSiam for reference), linear evaluation top-1 accuracy (%), mean ± std over seeds"
        ),
        differences="",


rule cluster_table:
    input:
        unpack(cluster_table_inputs),
    output:
        **table_outputs("clusters", "Experiment II", "Cluster quality"),
    log:
        "results/logs/cluster_table.log",
    benchmark:
        "results/benchmarks/cluster_table.tsv"
    conda:
        "../../envs/pytorch.yaml"
    params:
        min_steps=cli_flags(
            {"min_expert_steps": config["clustering"]["min_expert_steps"]}
        ),
        code=TABLES_CODE,
    shell:
        "imbssl cluster-table --summaries {input.summaries} --expert-metrics {input.experts}"
        " {params.min_steps} --out-csv {output.csv} --out-md {output.md} > {log} 2>&1"


rule figure1:
    input:
        subsets=expand("results/subsets/{subset}.csv", subset=SUBSETS),
        train=rules.prepare_data.output.train,
    output:
        png=report(
            "results/figures/figure1_class_distribution.png",
            caption="../report/figure1.rst",
            category="Experiment I",
            subcategory="Figure 1",
        ),
        pdf="results/figures/figure1_class_distribution.pdf",
    log:
        "results/logs/figure1.log",
    benchmark:
        "results/benchmarks/figure1.tsv"
    conda:
        "../../envs/pytorch.yaml"
    params:
        plots=cli_flags(config["plots"]),
        code=FIGURES_CODE,
    shell:
        "imbssl figure-subsets --subsets {input.subsets} --train-data {input.train}"
        " --out {output.png} {output.pdf} {params.plots} > {log} 2>&1"


rule figure3:
    input:
        pca=f"results/clusters/{{subset}}/seed{SEEDS[0]}/kmeans/pca.csv",
        contingency=f"results/clusters/{{subset}}/seed{SEEDS[0]}/kmeans/contingency.csv",
        summary=f"results/clusters/{{subset}}/seed{SEEDS[0]}/kmeans/summary.json",
    output:
        png=report(
            "results/figures/figure3_{subset}.png",
            caption="../report/figure3.rst",
            category="Experiment II",
            subcategory="Figure 3",
        ),
        pdf="results/figures/figure3_{subset}.pdf",
    log:
        "results/logs/figure3/{subset}.log",
    benchmark:
        "results/benchmarks/figure3/{subset}.tsv"
    conda:
        "../../envs/pytorch.yaml"
    params:
        plots=cli_flags(config["plots"]),
        code=FIGURES_CODE,
    shell:
        "imbssl figure-clusters --pca {input.pca} --contingency {input.contingency}"
        " --summary {input.summary} --out {output.png} {output.pdf} {params.plots} > {log} 2>&1"


rule figure4:
    input:
        expand(
            "results/prototypes/{subset}/{method}/seed{seed}.json",
            subset=config["prior_figure"]["subset"],
            method=PRIOR_METHODS,
            seed=SEEDS[0],
        ),
    output:
        png=report(
            "results/figures/figure4_prototype_usage.png",
            caption="../report/figure4.rst",
            category="Power-law prior",
            subcategory="Figure 4",
        ),
        pdf="results/figures/figure4_prototype_usage.pdf",
    log:
        "results/logs/figure4.log",
    benchmark:
        "results/benchmarks/figure4.tsv"
    conda:
        "../../envs/pytorch.yaml"
    params:
        title=f"Prototype usage on {config['prior_figure']['subset']} (seed {SEEDS[0]})",
        plots=cli_flags(config["plots"]),
        code=FIGURES_CODE,
    shell:
        "imbssl figure-prototypes --usage {input} --title {params.title:q}"
        " --out {output.png} {output.pdf} {params.plots} > {log} 2>&1"
