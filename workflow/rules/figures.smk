# The paper's aggregate figures (4, 5, 6, 7, 10, 24, 26) and the findings check.
import os

POLICY_FIGS = ["fig07_policy_size", "fig24_policy_gap"] if multi_policy() else []
AGG_FIGS = ["fig04_data_size", "fig05_rm_loss_gold", "fig06_rm_loss", "fig10_max_gold", "fig26_extrapolation"]


rule figures:
    input:
        bon_curves=grid(f"{OUT}/bon/{{policy}}/{{rm}}/n{{data}}/s{{seed}}.csv"),
        bon_fits=f"{OUT}/fits/bon.csv",
        rl_runs=rl_runs(),
        rl_fits=f"{OUT}/fits/rl.csv" if "rl" in CFG["methods"] else [],
    output:
        extrapolation=report(f"{OUT}/fits/extrapolation.csv", caption="../report/extrapolation.rst", category="Tables"),
        pdfs=[f"{OUT}/figures/{f}.pdf" for f in AGG_FIGS + POLICY_FIGS],
        pngs=[fig(f) for f in AGG_FIGS + POLICY_FIGS],
    params:
        rl=lambda w, input: f"--rl-runs {' '.join(input.rl_runs)} --rl-fits {input.rl_fits}" if input.rl_fits else "",
        policy_params=policy_params(),
        loss_n=CFG["analysis"]["loss_n"],
        bon_max_d=CFG["analysis"]["extrapolate_bon_max_d"],
        rl_max_d=CFG["analysis"]["extrapolate_rl_max_d"],
        figdir=lambda w, output: os.path.dirname(output.pdfs[0]),
    log:
        f"{OUT}/logs/figures.log",
    threads: 1
    resources:
        mem_mb=mem(base=2000),
        runtime=runtime(base=10),
    conda:
        CONDA_ENV
    shell:
        "overopt figures --bon-curves {input.bon_curves} --bon-fits {input.bon_fits} {params.rl}"
        " --policy-params {params.policy_params} --loss-n {params.loss_n} --bon-max-d {params.bon_max_d}"
        " --rl-max-d {params.rl_max_d} --extrapolation {output.extrapolation}"
        " --fig04 {params.figdir}/fig04_data_size.pdf --fig05 {params.figdir}/fig05_rm_loss_gold.pdf"
        " --fig06 {params.figdir}/fig06_rm_loss.pdf --fig07 {params.figdir}/fig07_policy_size.pdf"
        " --fig10 {params.figdir}/fig10_max_gold.pdf --fig24 {params.figdir}/fig24_policy_gap.pdf"
        " --fig26 {params.figdir}/fig26_extrapolation.pdf > {log} 2>&1"


rule findings:
    input:
        bon=f"{OUT}/fits/bon.csv",
        scores=grid(f"{OUT}/scores/{{policy}}/{{rm}}/n{{data}}/s{{seed}}.parquet"),
        rl=f"{OUT}/fits/rl.csv" if "rl" in CFG["methods"] else [],
        rl_runs=rl_runs() if "rl" in CFG["methods"] else [],
        rl_by_prompt=rl_runs(".by_prompt.csv") if "rl" in CFG["methods"] else [],
    output:
        report(f"{OUT}/findings.txt", caption="../report/findings.rst", category="Findings"),
    params:
        # every file it reads is an input above; options only for the ones this grid has
        optional=lambda w, input: " ".join(f"--{flag} {' '.join(input[k]) if isinstance(input[k], list) else input[k]}"
                                           for k, flag in (("rl", "rl-fits"), ("rl_runs", "rl-runs"),
                                                           ("rl_by_prompt", "rl-by-prompt"))
                                           if input[k]),
        policy_params=policy_params(),
        loss_n=CFG["analysis"]["loss_n"],
        bootstrap=CFG["analysis"]["findings_bootstrap"],
    log:
        f"{OUT}/logs/findings.log",
    threads: 4  # the study's last job: its findings evaluated side by side
    resources:
        mem_mb=mem(base=2000),
        runtime=runtime(base=10),
    conda:
        CONDA_ENV
    shell:
        # a FAIL is a result to read, not a broken job: --no-fail here, `overopt findings` exits 1
        "overopt findings --bon-fits {input.bon} --scores {input.scores}"
        " {params.optional} --policy-params {params.policy_params} --loss-n {params.loss_n}"
        " --bootstrap {params.bootstrap} --out {output} --threads {threads}"
        " --no-fail > {log} 2>&1"


rule summary:
    input:
        findings=f"{OUT}/findings.txt",
        rm_metrics=f"{OUT}/tables/rm_metrics.csv",
        bon=f"{OUT}/fits/bon.csv",
        rl=f"{OUT}/fits/rl.csv" if "rl" in CFG["methods"] else [],
        scaling=f"{OUT}/fits/scaling.csv" if len(CFG["reward_models"]) > 1 else [],
        benchmarks=benchmark_files(),
    output:
        report(f"{OUT}/summary.md", caption="../report/summary.rst", category="Findings"),
    params:
        optional=lambda w, input: " ".join(f"--{k} {input[k]}" for k in ("rl", "scaling") if input[k]),
        benchmarks=benchmark_labels(),
    log:
        f"{OUT}/logs/summary.log",
    threads: 1
    resources:
        mem_mb=mem(base=1000),
        runtime=runtime(base=5),
    conda:
        CONDA_ENV
    shell:
        "overopt summary --findings {input.findings} --rm-metrics {input.rm_metrics} --bon {input.bon}"
        " {params.optional} --benchmarks {params.benchmarks} --out {output} > {log} 2>&1"


if "robustness" in CFG:

    rule robustness:
        input:
            [f"{d}/findings.txt" for d in CFG["robustness"]["studies"].values()],
        output:
            CFG["robustness"]["out"],
        params:
            studies=" ".join(f"'{n}={d}/findings.txt'" for n, d in CFG["robustness"]["studies"].items()),
        log:
            f"{OUT}/logs/robustness.log",
        threads: 1
        resources:
            mem_mb=mem(base=1000),
            runtime=runtime(base=5),
        conda:
            CONDA_ENV
        shell:
            "overopt robustness --study {params.studies} --out {output} > {log} 2>&1"

    localrules:
        robustness,
