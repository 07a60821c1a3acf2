# Scaling laws: the fitted coefficients against RM size (paper Fig. 3).


rule scaling:
    input:
        bon=f"{OUT}/fits/bon.csv" if "bon" in CFG["methods"] else [],
        rl=f"{OUT}/fits/rl.csv" if "rl" in CFG["methods"] else [],
    output:
        table=report(f"{OUT}/fits/scaling.csv", caption="../report/scaling.rst", category="Tables"),
        pdf=f"{OUT}/figures/fig03_scaling.pdf",
        png=fig("fig03_scaling"),
    params:
        fits=lambda w, input: " ".join(f"--{m} {input[m]}" for m in ("bon", "rl") if input[m]),
        bootstrap=CFG["bon"]["bootstrap"],
    log:
        f"{OUT}/logs/scaling.log",
    threads: 1
    resources:
        mem_mb=mem(base=2000),
        runtime=runtime(base=10),
    conda:
        CONDA_ENV
    shell:
        "overopt scaling {params.fits} --out {output.table} --figure {output.pdf}"
        " --bootstrap {params.bootstrap} > {log} 2>&1"


rule forecast:
    input:
        bon_fits=f"{OUT}/fits/bon.csv" if "bon" in CFG["methods"] else [],
        bon_curves=grid(f"{OUT}/bon/{{policy}}/{{rm}}/n{{data}}/s{{seed}}.csv") if "bon" in CFG["methods"] else [],
        rl_fits=f"{OUT}/fits/rl.csv" if "rl" in CFG["methods"] else [],
        rl_runs=rl_runs(),
    output:
        table=report(f"{OUT}/fits/forecast.csv", caption="../report/forecast.rst", category="Tables"),
        pdf=f"{OUT}/figures/fig12_forecast.pdf",
        png=fig("fig12_forecast"),
    params:
        bon=lambda w, input: f"--bon-fits {input.bon_fits} --bon-curves {' '.join(input.bon_curves)}" if input.bon_fits else "",
        rl=lambda w, input: f"--rl-fits {input.rl_fits} --rl-runs {' '.join(input.rl_runs)}" if input.rl_fits else "",
        bootstrap=CFG["bon"]["bootstrap"],
    log:
        f"{OUT}/logs/forecast.log",
    threads: 1
    resources:
        mem_mb=mem(base=2000),
        runtime=runtime(base=10),
    conda:
        CONDA_ENV
    shell:
        "overopt forecast {params.bon} {params.rl} --bootstrap {params.bootstrap} --out {output.table}"
        " --figure {output.pdf} > {log} 2>&1"
