# RL: PPO against each proxy, one run per (policy, rm, data, kl_penalty, seed).


rule ppo:
    input:
        policy=lambda w: policy_input(w.policy),
        rm=f"{OUT}/rm/{{policy}}/{{rm}}/n{{data}}/s{{seed}}",
        gold=f"{OUT}/gold",
        pool=lambda w: f"{OUT}/pool/{w.policy}{pool_rep(w.seed)}.parquet",
        pool_gold=lambda w: f"{OUT}/pool/{w.policy}{pool_rep(w.seed)}.gold.parquet",
        scores=f"{OUT}/scores/{{policy}}/{{rm}}/n{{data}}/s{{seed}}.parquet",
        prompts=prompt_input(),
    output:
        curve=f"{OUT}/rl/{{policy}}/{{rm}}/n{{data}}/kl{{kl}}/s{{seed}}.csv",
        updates=f"{OUT}/rl/{{policy}}/{{rm}}/n{{data}}/kl{{kl}}/s{{seed}}.updates.csv",
        by_prompt=f"{OUT}/rl/{{policy}}/{{rm}}/n{{data}}/kl{{kl}}/s{{seed}}.by_prompt.csv",
    params:
        policy=lambda w: policy_path(w.policy),
        # checkpoints live outside the target so that a killed run resumes instead of restarting
        checkpoint=lambda w: f"{OUT}/rl_checkpoints/{w.policy}/{w.rm}/n{w.data}/kl{w.kl}/s{w.seed}",
        args=lambda w: rl_args(w.kl, w.seed),
        prompt_chars=CFG["world"]["prompt_chars"],
        completion_tokens=CFG["world"]["completion_tokens"],
        prompts=prompt_flag,
    log:
        f"{OUT}/logs/rl/{{policy}}/{{rm}}/n{{data}}/kl{{kl}}/s{{seed}}.log",
    benchmark:
        f"{OUT}/benchmarks/rl/{{policy}}/{{rm}}/n{{data}}/kl{{kl}}/s{{seed}}.tsv"
    threads: job_threads("policy", "rm", "gold")
    priority: 2
    resources:
        mem_mb=mem("policy", "policy", "rm", "gold", base=4000),
        runtime=runtime("policy", base=120, rule="ppo"),
        gpu_mem_mb=gpu_mem("ppo"),
        gpu=lambda w: max(gpus(w.policy, w.rm), 1 if "hf" in CFG["gold"] else 0),  # it evaluates under the gold
    conda:
        CONDA_ENV
    shell:
        "overopt ppo --policy {params.policy} --rm {input.rm} --gold {input.gold} --pool {input.pool}"
        " --pool-gold {input.pool_gold} --scores {input.scores} --out {output.curve} --updates {output.updates}"
        " --by-prompt {output.by_prompt}"
        " --checkpoint {params.checkpoint} --prompt-chars {params.prompt_chars}"
        " --completion-tokens {params.completion_tokens} {params.args} --threads {threads} {params.prompts} > {log} 2>&1"


rule fit_rl:
    input:
        runs=rl_runs(),
        rms=rl_rm_dirs(),
    output:
        report(f"{OUT}/fits/rl.csv", caption="../report/fits_rl.rst", category="Tables"),
    params:
        metrics=lambda w, input: " ".join(f"{d}/metrics.json" for d in input.rms),
        min_d=CFG["rl"]["fit_min_d"],
        bootstrap=CFG["bon"]["bootstrap"],
    log:
        f"{OUT}/logs/fit_rl.log",
    threads: 1
    resources:
        mem_mb=mem(base=2000),
        runtime=runtime(base=10),
    conda:
        CONDA_ENV
    shell:
        "overopt fit-rl --runs {input.runs} --metrics {params.metrics} --out {output}"
        " --min-d {params.min_d} --bootstrap {params.bootstrap} > {log} 2>&1"


rule fig_rl:
    input:
        runs=rl_runs(),
        fits=f"{OUT}/fits/rl.csv",
        bon_curves=grid(f"{OUT}/bon/{{policy}}/{{rm}}/n{{data}}/s{{seed}}.csv") if "bon" in CFG["methods"] else [],
        bon_fits=f"{OUT}/fits/bon.csv" if "bon" in CFG["methods"] else [],
    output:
        fig01=f"{OUT}/figures/fig01_rl.pdf",
        fig08=f"{OUT}/figures/fig08_bon_vs_rl.pdf",
        fig09=f"{OUT}/figures/fig09_kl_penalty.pdf",
        fig14=f"{OUT}/figures/fig14_rl_kl.pdf",
        pngs=[fig(f) for f in ("fig01_rl", "fig08_bon_vs_rl", "fig09_kl_penalty", "fig14_rl_kl")],
    params:
        bon=lambda w, input: f"--bon-curves {' '.join(input.bon_curves)} --bon-fits {input.bon_fits}" if input.bon_fits else "",
    log:
        f"{OUT}/logs/fig_rl.log",
    threads: 1
    resources:
        mem_mb=mem(base=2000),
        runtime=runtime(base=10),
    conda:
        CONDA_ENV
    shell:
        "overopt fig-rl --runs {input.runs} --fits {input.fits} {params.bon} --fig01 {output.fig01}"
        " --fig08 {output.fig08} --fig09 {output.fig09} --fig14 {output.fig14} > {log} 2>&1"

