rule prepare_data:
    output:
        train="results/data/train.npz",
        test="results/data/test.npz",
        # The uint8 image stores beside them (imbssl.data.store.images_path), memory-mapped by the jobs.
        train_images="results/data/train.images.npy",
        test_images="results/data/test.images.npy",
    log:
        "results/logs/prepare_data.log",
    benchmark:
        "results/benchmarks/prepare_data.tsv"
    conda:
        "../../envs/pytorch.yaml"
    resources:
        mem_mb=8000,
    params:
        dataset=cli_flags(config["dataset"]),
        code=command_code_hash("prepare-data"),
    shell:
        "imbssl prepare-data {params.dataset}"
        " --out-train {output.train} --out-test {output.test} > {log} 2>&1"


rule subsets:
    input:
        train=rules.prepare_data.output.train,
    output:
        "results/subsets/{subset}.csv",
    log:
        "results/logs/subsets/{subset}.log",
    benchmark:
        "results/benchmarks/subsets/{subset}.tsv"
    wildcard_constraints:
        subset="|".join(SUBSETS),
    conda:
        "../../envs/pytorch.yaml"
    params:
        # How every subset is drawn, not which factors exist: each subset is its own job (its factor
        # is in its name), so adding an imbalance factor adds jobs and reruns none that ran.
        subsets=cli_flags({key: config["subsets"][key] for key in ("profile", "seed")}),
        code=command_code_hash("subsets"),
    shell:
        "imbssl subsets --train-data {input.train} --subset {wildcards.subset}"
        " {params.subsets} --out {output} > {log} 2>&1"
