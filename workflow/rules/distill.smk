# Experiment II, last step: base + the K experts of one partition -> one student, saved where the
# evaluate rule looks for pretrained models (results/pretrain/{subset}/{student}/...).


rule distill:
    input:
        unpack(distill_inputs),
    output:
        model="results/pretrain/{subset}/{student}/seed{seed}/model.pt",
        metrics="results/pretrain/{subset}/{student}/seed{seed}/metrics.csv",
    log:
        "results/logs/distill/{subset}/{student}/seed{seed}.log",
    benchmark:
        "results/benchmarks/distill/{subset}/{student}/seed{seed}.tsv"
    conda:
        "../../envs/pytorch.yaml"
    threads: 1
    resources:
        **PRETRAIN_GPUS,
        mem_mb=16000,
        runtime=runtime_for(config["clustering"]["distill_epochs"]),
    params:
        settings=" ".join(cli_flags(section) for section in distill_sections()),
        out_dir=subpath(output.model, parent=True),
        code=command_code_hash("distill"),
    shell:
        on_gpu(
            "imbssl distill --base {input.base} --experts {input.experts}"
            " --clusters {input.clusters} --train-data {input.train} --test-data {input.test}"
            " --subset {input.subset} --seed {wildcards.seed}"
            " --out-dir {params.out_dir} {params.settings} > {log} 2>&1"
        )
