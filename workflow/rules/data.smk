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
        expand("results/subsets/{subset}.csv", subset=SUBSETS),
    log:
        "results/logs/subsets.log",
    benchmark:
        "results/benchmarks/subsets.tsv"
    conda:
        "../../envs/pytorch.yaml"
    params:
        subsets=cli_flags(config["subsets"]),
        out_dir=subpath(output[0], parent=True),
        code=command_code_hash("subsets"),
    shell:
        "imbssl subsets --train-data {input.train} {params.subsets}"
        " --out-dir {params.out_dir} > {log} 2>&1"
