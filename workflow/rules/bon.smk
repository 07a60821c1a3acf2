# Best-of-n: curves from the scores tables (pool.smk or shards.smk make them), fits, Figure 1.


# The gold of a pool, standardised once its parts or shards are joined; both pool stages end here.
rule merge_gold:
    input:
        gold_parts,
    output:
        f"{OUT}/pool/{{policy}}{{rep}}.gold.parquet",
    log:
        f"{OUT}/logs/score_gold/{{policy}}{{rep}}.merge.log",
    threads: 1
    priority: 3
    resources:
        mem_mb=mem(base=4000),
        runtime=runtime(base=10),
    conda:
        CONDA_ENV
    shell:
        "overopt merge-shards --kind gold --shards {input} --out {output} > {log} 2>&1"


rule bon_curve:
    input:
        f"{OUT}/scores/{{policy}}/{{rm}}/n{{data}}/s{{seed}}.parquet",
    output:
        f"{OUT}/bon/{{policy}}/{{rm}}/n{{data}}/s{{seed}}.csv",
    log:
        f"{OUT}/logs/bon/{{policy}}/{{rm}}/n{{data}}/s{{seed}}.log",
    threads: 1
    resources:
        mem_mb=mem(base=2000),
        runtime=runtime(base=10),
    conda:
        CONDA_ENV
    shell:
        "overopt bon-curve --scores {input} --out {output} > {log} 2>&1"


rule fit_bon:
    input:
        scores=grid(f"{OUT}/scores/{{policy}}/{{rm}}/n{{data}}/s{{seed}}.parquet"),
        rms=rm_dirs(),
    output:
        report(f"{OUT}/fits/bon.csv", caption="../report/fits_bon.rst", category="Tables"),
    params:
        metrics=lambda w, input: " ".join(f"{d}/metrics.json" for d in input.rms),
        bootstrap=CFG["bon"]["bootstrap"],
    log:
        f"{OUT}/logs/fit_bon.log",
    threads: 1
    resources:
        mem_mb=mem(base=4000),
        runtime=runtime(base=10),
    conda:
        CONDA_ENV
    shell:
        "overopt fit-bon --scores {input.scores} --metrics {params.metrics} --out {output}"
        " --bootstrap {params.bootstrap} > {log} 2>&1"


rule fig_bon:
    input:
        curves=grid(f"{OUT}/bon/{{policy}}/{{rm}}/n{{data}}/s{{seed}}.csv"),
        fits=f"{OUT}/fits/bon.csv",
    output:
        pdf=f"{OUT}/figures/fig01_bon.pdf",
        png=fig("fig01_bon"),
    log:
        f"{OUT}/logs/fig_bon.log",
    threads: 1
    resources:
        mem_mb=mem(base=2000),
        runtime=runtime(base=10),
    conda:
        CONDA_ENV
    shell:
        "overopt fig-bon --curves {input.curves} --fits {input.fits} --out {output.pdf} > {log} 2>&1"
