# Scaling laws: the fitted coefficients against RM size (paper Fig. 3).


rule scaling:
    input:
        bon=f"{OUT}/fits/bon.csv" if "bon" in CFG["methods"] else [],
        rl=f"{OUT}/fits/rl.csv" if "rl" in CFG["methods"] else [],
    output:
        table=f"{OUT}/fits/scaling.csv",
        pdf=f"{OUT}/figures/fig03_scaling.pdf",
        png=f"{OUT}/figures/fig03_scaling.png",
    params:
        fits=lambda w, input: " ".join(f"--{m} {input[m]}" for m in ("bon", "rl") if input[m]),
        bootstrap=CFG["bon"]["bootstrap"],
    log:
        f"{OUT}/logs/scaling.log",
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    shell:
        "overopt scaling {params.fits} --out {output.table} --figure {output.pdf}"
        " --bootstrap {params.bootstrap} > {log} 2>&1"
