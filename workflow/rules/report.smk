# Tables and figures come from result files only: seconds of work, run on the submitting host.
# Each rule says so with `localrule: True`, rules derived with `use rule ... with:` too (they do not
# inherit it): a `localrules:` list would keep the unprefixed names when the workflow is used as a
# module (`use rule * from imbssl as imbssl_*`), and the renamed rules would go to the cluster.


rule table2:
    input:
        EXPERIMENT_RESULTS["table2"],
    output:
        **table_outputs("table2", "Experiment I", "Table 2"),
        differences="results/tables/table2_differences.csv",
    log:
        "results/logs/table2.log",
    benchmark:
        "results/benchmarks/table2.tsv"
    localrule: True
    conda:
        "../../envs/pytorch.yaml"
    params:
        methods=catalog.table_columns("table2", METHODS),
        title=table_title(
            "Table 2: linear evaluation top-1 accuracy (%), mean ± std over seeds"
        ),
        # imbalanced-pX - balanced-pX of each method, paired by seed.
        differences=lambda wildcards, output: f"--imbalance-gaps --out-differences {output.differences}",
        code=command_code_hash("table"),
    shell:
        "imbssl table --results {input} --methods {params.methods:q} --title {params.title:q}"
        " {params.differences} --out-csv {output.csv} --out-md {output.md} --out-html {output.html} > {log} 2>&1"


use rule table2 as table3 with:
    input:
        EXPERIMENT_RESULTS["table3"],
    output:
        **table_outputs("table3", "Experiment II", "Table 3"),
        differences="results/tables/table3_differences.csv",
    log:
        "results/logs/table3.log",
    benchmark:
        "results/benchmarks/table3.tsv"
    localrule: True
    params:
        # The paper's columns; `n/a` where one was not run (e.g. simclr not in `methods`).
        methods=catalog.table_columns("table3", METHODS),
        title=table_title(
            "Table 3: linear evaluation top-1 accuracy (%), mean ± std over seeds"
        ),
        # The gains of the students over SimSiam on each subset, paired by seed.
        differences=lambda wildcards, output: (
            " ".join(f"--difference {a} {b}" for a, b in catalog.student_gains())
            + f" --out-differences {output.differences}"
        ),


use rule table2 as table4 with:
    input:
        EXPERIMENT_RESULTS["table4"],
    output:
        **table_outputs("table4", "Hidden uniform prior", "Table 4"),
        differences="results/tables/table4_differences.csv",
    log:
        "results/logs/table4.log",
    benchmark:
        "results/benchmarks/table4.tsv"
    localrule: True
    params:
        methods=catalog.table_columns("table4", METHODS),
        title=table_title(
            "Table 4: every method, linear evaluation top-1 accuracy (%), mean ± std over seeds"
        ),


rule cluster_table:
    input:
        unpack(cluster_table_inputs),
    output:
        **table_outputs("clusters", "Experiment II", "Cluster quality"),
    log:
        "results/logs/cluster_table.log",
    benchmark:
        "results/benchmarks/cluster_table.tsv"
    localrule: True
    conda:
        "../../envs/pytorch.yaml"
    params:
        min_steps=cli_flags(
            {"min_expert_steps": config["clustering"]["min_expert_steps"]}
        ),
        code=command_code_hash("cluster-table"),
    shell:
        "imbssl cluster-table --summaries {input.summaries} --expert-metrics {input.experts}"
        " {params.min_steps} --out-csv {output.csv} --out-md {output.md} --out-html {output.html} > {log} 2>&1"


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
    localrule: True
    conda:
        "../../envs/pytorch.yaml"
    params:
        plots=cli_flags(config["plots"]),
        code=command_code_hash("figure-subsets"),
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
    localrule: True
    conda:
        "../../envs/pytorch.yaml"
    params:
        plots=cli_flags(config["plots"]),
        code=command_code_hash("figure-clusters"),
    shell:
        "imbssl figure-clusters --pca {input.pca} --contingency {input.contingency}"
        " --summary {input.summary} --out {output.png} {output.pdf} {params.plots} > {log} 2>&1"


rule figure4:
    input:
        expand(
            "results/prototypes/{subset}/{method}/seed{seed}.json",
            subset=config["prior_figure"]["subset"],
            method=PROTOTYPE_METHODS,
            seed=SEEDS[0],
        ),
    output:
        png=report(
            "results/figures/figure4_prototype_usage.png",
            caption="../report/figure4.rst",
            category="Hidden uniform prior",
            subcategory="Figure 4",
        ),
        pdf="results/figures/figure4_prototype_usage.pdf",
    log:
        "results/logs/figure4.log",
    benchmark:
        "results/benchmarks/figure4.tsv"
    localrule: True
    conda:
        "../../envs/pytorch.yaml"
    params:
        title=f"Prototype usage on {config['prior_figure']['subset']} (seed {SEEDS[0]})",
        plots=cli_flags(config["plots"]),
        code=command_code_hash("figure-prototypes"),
    shell:
        "imbssl figure-prototypes --usage {input} --title {params.title:q}"
        " --out {output.png} {output.pdf} {params.plots} > {log} 2>&1"


# --- Where the accuracy goes: per class, by head / medium / tail group (analysis.py, per_class.py) ---


rule table2_groups:
    input:
        results=EXPERIMENT_RESULTS["table2"],
        subsets=SUBSET_CSVS,
    output:
        **table_outputs("table2_groups", "Experiment I", "Table 2 by class group"),
    log:
        "results/logs/table2_groups.log",
    benchmark:
        "results/benchmarks/table2_groups.tsv"
    localrule: True
    conda:
        "../../envs/pytorch.yaml"
    params:
        methods=catalog.table_columns("table2", METHODS),
        title=table_title(
            "Table 2 by class group: top-1 (%) of head / medium / tail classes, balancedness and worst class, mean ± std over seeds"
        ),
        analysis=cli_flags(config["analysis"]),
        code=command_code_hash("group-table"),
    shell:
        "imbssl group-table --results {input.results} --subsets {input.subsets}"
        " --methods {params.methods:q} --title {params.title:q} {params.analysis}"
        " --out-csv {output.csv} --out-md {output.md} --out-html {output.html} > {log} 2>&1"


use rule table2_groups as table3_groups with:
    input:
        results=EXPERIMENT_RESULTS["table3"],
        subsets=SUBSET_CSVS,
    output:
        **table_outputs("table3_groups", "Experiment II", "Table 3 by class group"),
    log:
        "results/logs/table3_groups.log",
    benchmark:
        "results/benchmarks/table3_groups.tsv"
    localrule: True
    params:
        methods=catalog.table_columns("table3", METHODS),
        title=table_title(
            "Table 3 by class group: top-1 (%) of head / medium / tail classes, balancedness and worst class, mean ± std over seeds"
        ),


use rule table2_groups as table4_groups with:
    input:
        results=EXPERIMENT_RESULTS["table4"],
        subsets=SUBSET_CSVS,
    output:
        **table_outputs(
            "table4_groups", "Hidden uniform prior", "Table 4 by class group"
        ),
    log:
        "results/logs/table4_groups.log",
    benchmark:
        "results/benchmarks/table4_groups.tsv"
    localrule: True
    params:
        methods=catalog.table_columns("table4", METHODS),
        title=table_title(
            "Table 4 by class group: top-1 (%) of head / medium / tail classes, balancedness and worst class, mean ± std over seeds"
        ),


rule per_class_table:
    input:
        results=ALL_RESULTS,
        subsets=SUBSET_CSVS,
    output:
        **table_outputs("per_class", "Per class", "Per-class accuracy"),
    log:
        "results/logs/per_class_table.log",
    benchmark:
        "results/benchmarks/per_class_table.tsv"
    localrule: True
    conda:
        "../../envs/pytorch.yaml"
    params:
        analysis=cli_flags(config["analysis"]),
        code=command_code_hash("per-class-table"),
    shell:
        "imbssl per-class-table --results {input.results} --subsets {input.subsets} {params.analysis}"
        " --out-csv {output.csv} --out-md {output.md} --out-html {output.html} > {log} 2>&1"


rule frequency_table2:
    input:
        results=EXPERIMENT_RESULTS["table2"],
        subsets=SUBSET_CSVS,
    output:
        **frequency_outputs("table2", "Experiment I"),
    log:
        "results/logs/frequency_table2.log",
    benchmark:
        "results/benchmarks/frequency_table2.tsv"
    localrule: True
    conda:
        "../../envs/pytorch.yaml"
    params:
        title="Experiment I: per-class accuracy against class frequency",
        analysis=cli_flags(config["analysis"]),
        plots=cli_flags(config["plots"]),
        code=command_code_hash("figure-frequency"),
    shell:
        "imbssl figure-frequency --results {input.results} --subsets {input.subsets}"
        " --title {params.title:q} {params.analysis} {params.plots}"
        " --out {output.png} {output.pdf} > {log} 2>&1"


use rule frequency_table2 as frequency_table3 with:
    input:
        results=EXPERIMENT_RESULTS["table3"],
        subsets=SUBSET_CSVS,
    output:
        **frequency_outputs("table3", "Experiment II"),
    log:
        "results/logs/frequency_table3.log",
    benchmark:
        "results/benchmarks/frequency_table3.tsv"
    localrule: True
    params:
        title="Experiment II: per-class accuracy against class frequency",


use rule frequency_table2 as frequency_table4 with:
    input:
        results=EXPERIMENT_RESULTS["table4"],
        subsets=SUBSET_CSVS,
    output:
        **frequency_outputs("table4", "Hidden uniform prior"),
    log:
        "results/logs/frequency_table4.log",
    benchmark:
        "results/benchmarks/frequency_table4.tsv"
    localrule: True
    params:
        title="Every method: per-class accuracy against class frequency",


# Training curves of the first seed: every method pretrained on a subset, and Experiment II's stages.
rule training_curves:
    input:
        expand(
            "results/pretrain/{{subset}}/{method}/seed{seed}/metrics.csv",
            method=METHODS,
            seed=SEEDS[0],
        ),
    output:
        png=report(
            "results/figures/curves/{subset}.png",
            caption="../report/training_curves.rst",
            category="Training curves",
            subcategory="{subset}",
        ),
        pdf="results/figures/curves/{subset}.pdf",
    log:
        "results/logs/training_curves/{subset}.log",
    benchmark:
        "results/benchmarks/training_curves/{subset}.tsv"
    localrule: True
    conda:
        "../../envs/pytorch.yaml"
    params:
        labels=[method_label(method) for method in METHODS],
        title=lambda wildcards: f"Pretraining on {wildcards.subset} (seed {SEEDS[0]})",
        plots=cli_flags(config["plots"]),
        code=command_code_hash("figure-curves"),
    shell:
        "imbssl figure-curves --metrics {input} --labels {params.labels:q} --title {params.title:q}"
        " {params.plots} --out {output.png} {output.pdf} > {log} 2>&1"


rule stage_curves:
    input:
        base=f"results/clusters/{{subset}}/seed{SEEDS[0]}/base/metrics.csv",
        experts=expand(
            "results/experts/{{subset}}/{kind}/seed{seed}/cluster{cluster}/metrics.csv",
            kind=KINDS,
            seed=SEEDS[0],
            cluster=range(K),
        ),
        students=expand(
            "results/pretrain/{{subset}}/{student}/seed{seed}/metrics.csv",
            student=STUDENT_PARTITION,
            seed=SEEDS[0],
        ),
    output:
        png=report(
            "results/figures/curves/experiment2_{subset}.png",
            caption="../report/stage_curves.rst",
            category="Training curves",
            subcategory="{subset}",
        ),
        pdf="results/figures/curves/experiment2_{subset}.pdf",
    log:
        "results/logs/stage_curves/{subset}.log",
    benchmark:
        "results/benchmarks/stage_curves/{subset}.tsv"
    localrule: True
    conda:
        "../../envs/pytorch.yaml"
    params:
        kinds=KINDS,
        title=lambda wildcards: f"Experiment II on {wildcards.subset} (seed {SEEDS[0]})",
        plots=cli_flags(config["plots"]),
        code=command_code_hash("figure-stages"),
    shell:
        "imbssl figure-stages --base {input.base} --kinds {params.kinds} --experts {input.experts}"
        " --students {input.students} --title {params.title:q} {params.plots}"
        " --out {output.png} {output.pdf} > {log} 2>&1"


# --- When does imbalance hurt: accuracy against the imbalance factor (reporting/sweep.py) ---


rule imbalance_table2:
    input:
        results=EXPERIMENT_RESULTS["table2"],
        subsets=SUBSET_CSVS,
    output:
        **imbalance_outputs("table2", "Experiment I"),
    log:
        "results/logs/imbalance_table2.log",
    benchmark:
        "results/benchmarks/imbalance_table2.tsv"
    localrule: True
    conda:
        "../../envs/pytorch.yaml"
    params:
        title="Experiment I: top-1 against the imbalance factor (mean ± std over seeds)",
        analysis=cli_flags(config["analysis"]),
        plots=cli_flags(config["plots"]),
        code=command_code_hash("figure-imbalance"),
    shell:
        "imbssl figure-imbalance --results {input.results} --subsets {input.subsets}"
        " --title {params.title:q} {params.analysis} {params.plots}"
        " --out {output.png} {output.pdf} > {log} 2>&1"


use rule imbalance_table2 as imbalance_table4 with:
    input:
        results=EXPERIMENT_RESULTS["table4"],
        subsets=SUBSET_CSVS,
    output:
        **imbalance_outputs("table4", "Hidden uniform prior"),
    log:
        "results/logs/imbalance_table4.log",
    benchmark:
        "results/benchmarks/imbalance_table4.tsv"
    localrule: True
    params:
        title="Every method: top-1 against the imbalance factor (mean ± std over seeds)",
