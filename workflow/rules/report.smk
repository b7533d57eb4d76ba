# Tables and figures come from result files only: seconds of work, run on the submitting host.
localrules:
    table2,
    figure1,


rule table2:
    input:
        result_jsons(),
    output:
        csv=report(
            "results/tables/table2.csv",
            caption="../report/table2.rst",
            category="Experiment I",
            subcategory="Table 2",
        ),
        md=report(
            "results/tables/table2.md",
            caption="../report/table2.rst",
            category="Experiment I",
            subcategory="Table 2",
        ),
    log:
        "results/logs/table2.log",
    benchmark:
        "results/benchmarks/table2.tsv"
    conda:
        "../../envs/pytorch.yaml"
    params:
        methods=[method_label(method) for method in METHODS],
        title="Table 2: linear evaluation top-1 accuracy (%), mean ± std over seeds",
        code=REPORT_CODE,
    shell:
        "imbssl table --results {input} --methods {params.methods:q} --title {params.title:q}"
        " --out-csv {output.csv} --out-md {output.md} > {log} 2>&1"


rule figure1:
    input:
        expand("results/subsets/{subset}.csv", subset=SUBSETS),
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
        classes=cli_flags({"classes": config["dataset"]["classes"]}),
        plots=cli_flags(config["plots"]),
        code=REPORT_CODE,
    shell:
        "imbssl figure-subsets --subsets {input} {params.classes}"
        " --out {output.png} {output.pdf} {params.plots} > {log} 2>&1"
