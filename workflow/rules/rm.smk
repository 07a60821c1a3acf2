# Proxy reward models: one per (policy, RM size, data size, seed), and their metrics table.


rule loglik_pairs:
    input:
        base=lambda w: base_input(w.rm),
        comparisons=f"{OUT}/comparisons/{{policy}}{{rep}}.pairs.parquet",
    output:
        f"{OUT}/loglik/{{policy}}/{{rm}}{{rep}}.pairs.parquet",
    params:
        base=lambda w: base_path(w.rm),
        train_pairs=lambda w: comparison_pairs(w.policy, w.rm),
    log:
        f"{OUT}/logs/loglik/{{policy}}/{{rm}}{{rep}}.pairs.log",
    benchmark:
        f"{OUT}/benchmarks/loglik_pairs/{{policy}}/{{rm}}{{rep}}.tsv"
    threads: job_threads("rm")
    priority: 4
    resources:
        mem_mb=mem("rm", base=3000),
        runtime=runtime("rm", base=30, rule="loglik_pairs"),
        gpu_mem_mb=gpu_mem("loglik_pairs"),
        gpu=lambda w: gpus(w.rm),
    conda:
        CONDA_ENV
    shell:
        "overopt loglik-pairs --base {params.base} --comparisons {input.comparisons} --out {output}"
        " --train-pairs {params.train_pairs} --threads {threads} > {log} 2>&1"


rule train_rm:
    input:
        base=lambda w: base_input(w.rm),
        comparisons=lambda w: label_part_files(w.policy, cmp_rep(w.seed), w.data),
        loglik=lambda w: loglik_input(w, "pairs"),
    output:
        directory(f"{OUT}/rm/{{policy}}/{{rm}}/n{{data}}/s{{seed}}"),
    params:
        base=lambda w: base_path(w.rm),
        epochs=CFG["rm_train"]["epochs"],
        batch_size=CFG["rm_train"]["batch_size"],
        lr=lambda w: rm_lr(w.rm),
        readout=lambda w: rm_readout_flags(w.rm) + "".join(f" --loglik {f}" for f in loglik_input(w, "pairs")),
    log:
        f"{OUT}/logs/rm/{{policy}}/{{rm}}/n{{data}}/s{{seed}}.log",
    benchmark:
        f"{OUT}/benchmarks/rm/{{policy}}/{{rm}}/n{{data}}/s{{seed}}.tsv"
    threads: job_threads("rm")
    priority: rl_chain_priority
    resources:
        mem_mb=mem("rm", base=3000),
        runtime=runtime("rm", base=30, rule="train_rm"),
        gpu_mem_mb=gpu_mem("train_rm"),
        gpu=lambda w: gpus(w.rm),
    conda:
        CONDA_ENV
    shell:
        "overopt train-rm --base {params.base} --comparisons {input.comparisons} --out {output}"
        " --cell {wildcards.policy} {wildcards.rm} --data-size {wildcards.data} --seed {wildcards.seed} --epochs {params.epochs}"
        " --batch-size {params.batch_size} --lr {params.lr} {params.readout} --threads {threads} > {log} 2>&1"


rule rm_table:
    input:
        rm_dirs(),
    output:
        f"{OUT}/tables/rm_metrics.csv",
    params:
        metrics=lambda w, input: " ".join(f"{d}/metrics.json" for d in input),
    log:
        f"{OUT}/logs/rm_table.log",
    threads: 1
    resources:
        mem_mb=mem(base=1000),
        runtime=runtime(base=5),
    conda:
        CONDA_ENV
    shell:
        "overopt rm-table --metrics {params.metrics} --out {output} > {log} 2>&1"
