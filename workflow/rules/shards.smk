# The best-of-n pool in shards of `bon.shard_prompts` prompts: every shard is sampled and scored by
# jobs of its own, and cheap merges write the same files pool.smk writes in one job per pool. No
# proxy scoring waits on the gold: the gold joins the proxy's scores in their merge.


rule pool_shard:
    input:
        policy=lambda w: policy_input(w.policy),
        prompts=prompt_input(),
    output:
        f"{OUT}/pool/{{policy}}{{rep}}/shard{{shard}}.parquet",
    params:
        policy=lambda w: policy_path(w.policy),
        prompts=CFG["bon"]["prompts"],
        samples=CFG["bon"]["samples"],
        batch_size=CFG["bon"]["batch_size"],
        seed=CFG["bon"]["seed"],
        replicate=lambda w: rep_index(w.rep),
        shard=lambda w: "{} {}".format(*shard_range(w.shard)),
        prompt_chars=CFG["world"]["prompt_chars"],
        completion_tokens=CFG["world"]["completion_tokens"],
        prompt_file=prompt_flag,
    log:
        f"{OUT}/logs/pool/{{policy}}{{rep}}/shard{{shard}}.log",
    benchmark:
        f"{OUT}/benchmarks/pool/{{policy}}{{rep}}/shard{{shard}}.tsv"
    threads: job_threads("policy")
    priority: 2
    resources:
        mem_mb=mem("policy", base=4000),
        runtime=runtime("policy", base=60, rule="pool_shard"),
        gpu_mem_mb=gpu_mem("pool_shard"),
        gpu=lambda w: gpus(w.policy),
    conda:
        CONDA_ENV
    shell:
        "overopt pool --policy {params.policy} --out {output} --prompts {params.prompts}"
        " --samples {params.samples} --prompt-chars {params.prompt_chars}"
        " --completion-tokens {params.completion_tokens} --batch-size {params.batch_size}"
        " --seed {params.seed} --replicate {params.replicate} --shard {params.shard}"
        " --threads {threads} {params.prompt_file} > {log} 2>&1"


rule score_gold_shard:
    input:
        pool=f"{OUT}/pool/{{policy}}{{rep}}/shard{{shard}}.parquet",
        gold=f"{OUT}/gold",
    output:
        f"{OUT}/pool/{{policy}}{{rep}}/shard{{shard}}.gold.parquet",
    log:
        f"{OUT}/logs/score_gold/{{policy}}{{rep}}/shard{{shard}}.log",
    benchmark:
        f"{OUT}/benchmarks/score_gold/{{policy}}{{rep}}/shard{{shard}}.tsv"
    threads: job_threads("gold")
    priority: 3
    resources:
        mem_mb=mem("gold", base=4000),
        runtime=runtime("gold", base=60, rule="score_gold_shard"),
        gpu_mem_mb=gpu_mem("score_gold_shard"),
        gpu=1 if "hf" in CFG["gold"] else 0,
    conda:
        CONDA_ENV
    shell:
        "overopt score-gold --raw --pool {input.pool} --gold {input.gold} --out {output} --threads {threads} > {log} 2>&1"


rule loglik_pool_shard:
    input:
        base=lambda w: base_input(w.rm),
        pool=f"{OUT}/pool/{{policy}}{{rep}}/shard{{shard}}.parquet",
    output:
        f"{OUT}/loglik/{{policy}}/{{rm}}{{rep}}.pool/shard{{shard}}.parquet",
    params:
        base=lambda w: base_path(w.rm),
    log:
        f"{OUT}/logs/loglik/{{policy}}/{{rm}}{{rep}}.pool/shard{{shard}}.log",
    benchmark:
        f"{OUT}/benchmarks/loglik_pool/{{policy}}/{{rm}}{{rep}}/shard{{shard}}.tsv"
    threads: job_threads("rm")
    priority: lambda w: 2 if any((w.policy, w.rm) == (p, r) for p, r, _ in RL_CELLS) else 1
    resources:
        mem_mb=mem("rm", base=4000),
        runtime=runtime("rm", base=60, rule="loglik_pool_shard"),
        gpu_mem_mb=gpu_mem("loglik_pool_shard"),
        gpu=lambda w: gpus(w.rm),
    conda:
        CONDA_ENV
    shell:
        "overopt loglik-pool --base {params.base} --pool {input.pool} --out {output} --threads {threads} > {log} 2>&1"


rule score_proxy_shard:
    input:
        pool=lambda w: f"{OUT}/pool/{w.policy}{pool_rep(w.seed)}/shard{w.shard}.parquet",
        rm=f"{OUT}/rm/{{policy}}/{{rm}}/n{{data}}/s{{seed}}",
        loglik=lambda w: loglik_shard_input(w),
    output:
        f"{OUT}/scores/{{policy}}/{{rm}}/n{{data}}/s{{seed}}/shard{{shard}}.parquet",
    params:
        dtype=CFG["bon"]["score_dtype"],
        loglik=lambda w: "".join(f"--loglik {f}" for f in loglik_shard_input(w)),
    log:
        f"{OUT}/logs/scores/{{policy}}/{{rm}}/n{{data}}/s{{seed}}/shard{{shard}}.log",
    benchmark:
        f"{OUT}/benchmarks/scores/{{policy}}/{{rm}}/n{{data}}/s{{seed}}/shard{{shard}}.tsv"
    threads: job_threads("rm")
    priority: rl_chain_priority
    resources:
        mem_mb=mem("rm", base=4000),
        runtime=runtime("rm", base=60, rule="score_proxy_shard"),
        gpu_mem_mb=gpu_mem("score_proxy_shard"),
        gpu=lambda w: gpus(w.rm),
    conda:
        CONDA_ENV
    shell:
        "overopt score-proxy --pool {input.pool} --rm {input.rm}"
        " --out {output} --dtype {params.dtype} {params.loglik} --threads {threads} > {log} 2>&1"


# Merges read and write tables and load no model; they are jobs like the rest (on a cluster, a
# merged pool of millions of texts is no work for the login node). A proxy's likelihood readout
# reads its shard's table, so those tables are never merged.
rule merge_pool:
    input:
        lambda w: shard_files(f"{OUT}/pool/{w.policy}{w.rep}", ".parquet"),
    output:
        f"{OUT}/pool/{{policy}}{{rep}}.parquet",
    log:
        f"{OUT}/logs/pool/{{policy}}{{rep}}.merge.log",
    threads: 1
    priority: 2
    resources:
        mem_mb=pool_mem(base=4000),
        runtime=runtime(base=10),
    conda:
        CONDA_ENV
    shell:
        "overopt merge-shards --kind pool --shards {input} --out {output} > {log} 2>&1"


rule merge_scores:
    input:
        shards=lambda w: shard_files(f"{OUT}/scores/{w.policy}/{w.rm}/n{w.data}/s{w.seed}", ".parquet"),
        gold=lambda w: f"{OUT}/pool/{w.policy}{pool_rep(w.seed)}.gold.parquet",
    output:
        f"{OUT}/scores/{{policy}}/{{rm}}/n{{data}}/s{{seed}}.parquet",
    log:
        f"{OUT}/logs/scores/{{policy}}/{{rm}}/n{{data}}/s{{seed}}.merge.log",
    threads: 1
    priority: rl_chain_priority
    resources:
        mem_mb=mem(base=4000),
        runtime=runtime(base=10),
    conda:
        CONDA_ENV
    shell:
        "overopt merge-shards --kind scores --shards {input.shards} --gold-scores {input.gold} --out {output} > {log} 2>&1"
