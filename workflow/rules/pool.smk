# The best-of-n pool of each policy (and replicate), sampled and scored in one job per pool and
# model (`bon.shard_prompts` unset; shards.smk otherwise), but for the gold: `bon.gold_parts` jobs
# of consecutive prompts, joined by merge_gold (bon.smk).


rule pool:
    input:
        policy=lambda w: policy_input(w.policy),
        prompts=prompt_input(),
    output:
        f"{OUT}/pool/{{policy}}{{rep}}.parquet",
    params:
        policy=lambda w: policy_path(w.policy),
        prompts=CFG["bon"]["prompts"],
        samples=CFG["bon"]["samples"],
        batch_size=CFG["bon"]["batch_size"],
        seed=CFG["bon"]["seed"],
        replicate=lambda w: rep_index(w.rep),
        prompt_chars=CFG["world"]["prompt_chars"],
        completion_tokens=CFG["world"]["completion_tokens"],
        prompt_file=prompt_flag,
    log:
        f"{OUT}/logs/pool/{{policy}}{{rep}}.log",
    benchmark:
        f"{OUT}/benchmarks/pool/{{policy}}{{rep}}.tsv"
    threads: job_threads("policy")
    priority: 2
    resources:
        mem_mb=mem("policy", base=4000),
        runtime=runtime("policy", base=60, rule="pool"),
        gpu_mem_mb=gpu_mem("pool"),
        gpu=lambda w: gpus(w.policy),
    conda:
        CONDA_ENV
    shell:
        "overopt pool --policy {params.policy} --out {output} --prompts {params.prompts}"
        " --samples {params.samples} --prompt-chars {params.prompt_chars}"
        " --completion-tokens {params.completion_tokens} --batch-size {params.batch_size}"
        " --seed {params.seed} --replicate {params.replicate} --threads {threads} {params.prompt_file} > {log} 2>&1"


rule score_gold_part:
    input:
        pool=f"{OUT}/pool/{{policy}}{{rep}}.parquet",
        gold=f"{OUT}/gold",
    output:
        f"{OUT}/pool/{{policy}}{{rep}}.gold/part{{part}}.parquet",
    params:
        prompts=lambda w: "{} {}".format(*gold_part_range(CFG, w.part)),
    log:
        f"{OUT}/logs/score_gold/{{policy}}{{rep}}/part{{part}}.log",
    benchmark:
        f"{OUT}/benchmarks/score_gold/{{policy}}{{rep}}/part{{part}}.tsv"
    threads: job_threads("gold")
    priority: 3
    resources:
        mem_mb=mem("gold", base=4000),
        runtime=runtime("gold", base=60, rule="score_gold_part"),
        gpu_mem_mb=gpu_mem("score_gold_part"),
        gpu=1 if "hf" in CFG["gold"] else 0,
    conda:
        CONDA_ENV
    shell:
        "overopt score-gold --raw --pool {input.pool} --gold {input.gold} --out {output}"
        " --prompt-range {params.prompts} --threads {threads} > {log} 2>&1"


rule loglik_pool:
    input:
        base=lambda w: base_input(w.rm),
        pool=f"{OUT}/pool/{{policy}}{{rep}}.parquet",
    output:
        f"{OUT}/loglik/{{policy}}/{{rm}}{{rep}}.pool.parquet",
    params:
        base=lambda w: base_path(w.rm),
    log:
        f"{OUT}/logs/loglik/{{policy}}/{{rm}}{{rep}}.pool.log",
    benchmark:
        f"{OUT}/benchmarks/loglik_pool/{{policy}}/{{rm}}{{rep}}.tsv"
    threads: job_threads("rm")
    priority: lambda w: 2 if any((w.policy, w.rm) == (p, r) for p, r, _ in RL_CELLS) else 1
    resources:
        mem_mb=mem("rm", base=4000),
        runtime=runtime("rm", base=60, rule="loglik_pool"),
        gpu_mem_mb=gpu_mem("loglik_pool"),
        gpu=lambda w: gpus(w.rm),
    conda:
        CONDA_ENV
    shell:
        "overopt loglik-pool --base {params.base} --pool {input.pool} --out {output} --threads {threads} > {log} 2>&1"


rule score_proxy:
    input:
        pool=lambda w: f"{OUT}/pool/{w.policy}{pool_rep(w.seed)}.parquet",
        gold_scores=lambda w: f"{OUT}/pool/{w.policy}{pool_rep(w.seed)}.gold.parquet",
        rm=f"{OUT}/rm/{{policy}}/{{rm}}/n{{data}}/s{{seed}}",
        loglik=lambda w: loglik_input(w, "pool"),
    output:
        f"{OUT}/scores/{{policy}}/{{rm}}/n{{data}}/s{{seed}}.parquet",
    params:
        dtype=CFG["bon"]["score_dtype"],
        loglik=lambda w: "".join(f"--loglik {f}" for f in loglik_input(w, "pool")),
    log:
        f"{OUT}/logs/scores/{{policy}}/{{rm}}/n{{data}}/s{{seed}}.log",
    benchmark:
        f"{OUT}/benchmarks/scores/{{policy}}/{{rm}}/n{{data}}/s{{seed}}.tsv"
    threads: job_threads("rm")
    priority: rl_chain_priority
    resources:
        mem_mb=mem("rm", base=4000),
        runtime=runtime("rm", base=60, rule="score_proxy"),
        gpu_mem_mb=gpu_mem("score_proxy"),
        gpu=lambda w: gpus(w.rm),
    conda:
        CONDA_ENV
    shell:
        "overopt score-proxy --pool {input.pool} --gold-scores {input.gold_scores} --rm {input.rm}"
        " --out {output} --dtype {params.dtype} {params.loglik} --threads {threads} > {log} 2>&1"

