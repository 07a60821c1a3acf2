# The tiny world and the gold: tokenizer, pretrained LM bases, gold RM, labelled comparisons.


rule tokenizer:
    output:
        directory(f"{OUT}/tokenizer"),
    log:
        f"{OUT}/logs/tokenizer.log",
    threads: 1
    resources:
        mem_mb=mem(base=1000),
        runtime=runtime(base=5),
    conda:
        CONDA_ENV
    shell:
        "overopt tokenizer --out {output} > {log} 2>&1"


rule pretrain:
    input:
        tokenizer=f"{OUT}/tokenizer",
    output:
        directory(f"{OUT}/base/{{model}}"),
    params:
        spec=lambda w: canonical(MODELS[w.model]["tiny"]),
        steps=lambda w: MODELS[w.model]["tiny"].get("steps", CFG["pretrain"]["steps"]),
        lr=lambda w: MODELS[w.model]["tiny"].get("lr", CFG["pretrain"]["lr"]),
        batch_size=CFG["pretrain"]["batch_size"],
        seq_len=CFG["pretrain"]["seq_len"],
        seed=CFG["pretrain"]["seed"],
    log:
        f"{OUT}/logs/pretrain/{{model}}.log",
    benchmark:
        f"{OUT}/benchmarks/pretrain/{{model}}.tsv"
    threads: pretrain_threads
    priority: pretrain_priority
    resources:
        mem_mb=mem("model", base=2000),
        runtime=runtime("model", base=30),
        gpu=0,
    conda:
        CONDA_ENV
    shell:
        "overopt pretrain --spec '{params.spec}' --tokenizer {input.tokenizer} --out {output}"
        " --steps {params.steps} --lr {params.lr} --batch-size {params.batch_size}"
        " --seq-len {params.seq_len} --seed {params.seed} --threads {threads} > {log} 2>&1"


rule sft:
    input:
        base=lambda w: base_input(w.policy),
        demonstrations=sft_demonstrations(),
    output:
        model=directory(f"{OUT}/sft/{{policy}}"),
        spec=f"{OUT}/sft/{{policy}}.json",
    params:
        base=lambda w: base_path(w.policy),
        steps=(SFT or {}).get("steps"),
        batch_size=(SFT or {}).get("batch_size"),
        seq_len=(SFT or {}).get("seq_len"),
        lr=(SFT or {}).get("lr"),
        seed=(SFT or {}).get("seed"),
        demonstrations=lambda w, input: (f"--demonstrations {input.demonstrations} --column "
                                         f"{SFT['demonstrations']['column']}" if input.demonstrations else ""),
    log:
        f"{OUT}/logs/sft/{{policy}}.log",
    benchmark:
        f"{OUT}/benchmarks/sft/{{policy}}.tsv"
    threads: job_threads("policy")
    priority: 3
    resources:
        mem_mb=mem("policy", base=4000),
        runtime=runtime("policy", base=60, rule="sft"),
        gpu_mem_mb=gpu_mem("sft"),
        gpu=lambda w: gpus(w.policy),
    conda:
        CONDA_ENV
    shell:
        "overopt sft --base {params.base} --out {output.model} --spec-out {output.spec} --steps {params.steps}"
        " --batch-size {params.batch_size} --seq-len {params.seq_len} --lr {params.lr} --seed {params.seed}"
        " {params.demonstrations} --threads {threads} > {log} 2>&1"


GOLD = CFG["gold"]
LEARNED = GOLD.get("learned")
# the hand-written (or hf) gold: the gold itself, or with `gold.learned` the teacher of the learned one
TEACHER = {"tiny": GOLD["tiny"]} if LEARNED else GOLD


rule gold:
    input:
        reference=base_input(GOLD["tiny"]["reference"]) if "reference" in GOLD.get("tiny", {}) else [],
    output:
        directory(f"{OUT}/gold_teacher" if LEARNED else f"{OUT}/gold"),
    params:
        spec=canonical(TEACHER),
        reference=lambda w, input: f"--reference {input.reference}" if input.reference else "",
        prompt_chars=CFG["world"]["prompt_chars"],
        completion_tokens=CFG["world"]["completion_tokens"],
        seed=GOLD["tiny"]["seed"] if "tiny" in GOLD else 0,  # an hf gold draws nothing
    log:
        f"{OUT}/logs/gold.log",
    threads: 1
    priority: 3
    resources:
        mem_mb=mem("gold", base=2000),
        runtime=runtime("gold", base=10),
    conda:
        CONDA_ENV
    shell:
        "overopt gold --spec '{params.spec}' {params.reference} --out {output}"
        " --prompt-chars {params.prompt_chars} --completion-tokens {params.completion_tokens}"
        " --seed {params.seed} > {log} 2>&1"


if LEARNED:

    rule gold_rm_pairs:
        input:
            policy=policy_input(LEARNED["policy"]),
            prompts=prompt_input(),
        output:
            f"{OUT}/gold_rm/pairs.parquet",
        params:
            policy=policy_path(LEARNED["policy"]),
            prompt_chars=CFG["world"]["prompt_chars"],
            completion_tokens=CFG["world"]["completion_tokens"],
            batch_size=CFG["comparisons"]["batch_size"],
            pairs=LEARNED["pairs"],
            val_pairs=LEARNED["val_pairs"],
            seed=LEARNED["seed"],
            prompts=prompt_flag,
        log:
            f"{OUT}/logs/gold_rm/pairs.log",
        benchmark:
            f"{OUT}/benchmarks/gold_rm/pairs.tsv"
        threads: 1
        priority: 4
        resources:
            mem_mb=mem(base=4000),
            runtime=runtime(base=60),
        conda:
            CONDA_ENV
        shell:
            "overopt pairs --policy {params.policy} --out {output} --train-pairs {params.pairs}"
            " --val-pairs {params.val_pairs} --prompt-chars {params.prompt_chars}"
            " --completion-tokens {params.completion_tokens} --batch-size {params.batch_size}"
            " --seed {params.seed} --threads {threads} {params.prompts} > {log} 2>&1"

    rule gold_rm_labels:
        input:
            pairs=f"{OUT}/gold_rm/pairs.parquet",
            teacher=f"{OUT}/gold_teacher",
        output:
            pairs=f"{OUT}/gold_rm/comparisons.parquet",
            stats=f"{OUT}/gold_rm/comparisons.json",
        log:
            f"{OUT}/logs/gold_rm/comparisons.log",
        benchmark:
            f"{OUT}/benchmarks/gold_rm/comparisons.tsv"
        threads: 1
        priority: 4
        resources:
            mem_mb=mem(base=4000),
            runtime=runtime(base=60),
        conda:
            CONDA_ENV
        shell:
            "overopt comparisons --pairs {input.pairs} --gold {input.teacher} --out {output.pairs}"
            " --label-noise 0 --threads {threads} > {log} 2>&1"

    rule gold_rm:
        input:
            base=base_input(LEARNED["base"]),
            comparisons=f"{OUT}/gold_rm/comparisons.parquet",
        output:
            directory(f"{OUT}/gold_rm/rm"),
        params:
            base=base_path(LEARNED["base"]),
            cell=f'{LEARNED["policy"]} {LEARNED["base"]}',
            data=LEARNED["pairs"],
            seed=LEARNED["seed"],
            epochs=LEARNED["epochs"],
            batch_size=LEARNED["batch_size"],
            lr=LEARNED["lr"],
        log:
            f"{OUT}/logs/gold_rm/rm.log",
        benchmark:
            f"{OUT}/benchmarks/gold_rm/rm.tsv"
        threads: 1
        priority: 4
        resources:
            mem_mb=mem(base=4000),
            runtime=runtime(base=120),
        conda:
            CONDA_ENV
        shell:
            # the paper's architecture: an LM with a scalar head, no readout
            "overopt train-rm --base {params.base} --comparisons {input.comparisons} --out {output}"
            " --cell {params.cell} --data-size {params.data} --seed {params.seed} --epochs {params.epochs}"
            " --batch-size {params.batch_size} --lr {params.lr} --threads {threads} > {log} 2>&1"

    rule gold_learned:
        input:
            rm=f"{OUT}/gold_rm/rm",
        output:
            directory(f"{OUT}/gold"),
        params:
            spec=canonical(GOLD),
            prompt_chars=CFG["world"]["prompt_chars"],
            completion_tokens=CFG["world"]["completion_tokens"],
        log:
            f"{OUT}/logs/gold.log",
        threads: 1
        priority: 4
        resources:
            mem_mb=mem(base=2000),
            runtime=runtime(base=10),
        conda:
            CONDA_ENV
        shell:
            "overopt gold --spec '{params.spec}' --learned-rm {input.rm} --out {output}"
            " --prompt-chars {params.prompt_chars} --completion-tokens {params.completion_tokens}"
            " --seed 0 > {log} 2>&1"


rule pairs:
    input:
        policy=lambda w: policy_input(w.policy),
        prompts=prompt_input(),
    output:
        f"{OUT}/comparisons/{{policy}}{{rep}}.pairs.parquet",
    params:
        policy=lambda w: policy_path(w.policy),
        train_pairs=lambda w: comparison_pairs(w.policy),
        val_pairs=CFG["comparisons"]["val_pairs"],
        batch_size=CFG["comparisons"]["batch_size"],
        seed=lambda w: CFG["comparisons"]["seed"] + rep_index(w.rep),
        prompt_chars=CFG["world"]["prompt_chars"],
        completion_tokens=CFG["world"]["completion_tokens"],
        prompts=prompt_flag,
    log:
        f"{OUT}/logs/comparisons/{{policy}}{{rep}}.pairs.log",
    benchmark:
        f"{OUT}/benchmarks/pairs/{{policy}}{{rep}}.tsv"
    threads: job_threads("policy")
    priority: 4  # every proxy waits on its policy's comparisons; pool scoring only on the pool
    resources:
        mem_mb=mem("policy", base=4000),
        runtime=runtime("policy", base=30, rule="pairs"),
        gpu_mem_mb=gpu_mem("pairs"),
        gpu=lambda w: gpus(w.policy),
    conda:
        CONDA_ENV
    shell:
        "overopt pairs --policy {params.policy} --out {output}"
        " --train-pairs {params.train_pairs} --val-pairs {params.val_pairs}"
        " --prompt-chars {params.prompt_chars} --completion-tokens {params.completion_tokens}"
        " --batch-size {params.batch_size} --seed {params.seed} --threads {threads} {params.prompts} > {log} 2>&1"


rule labels:
    input:
        pairs=f"{OUT}/comparisons/{{policy}}{{rep}}.pairs.parquet",
        gold=f"{OUT}/gold",
    output:
        f"{OUT}/comparisons/{{policy}}{{rep}}/part{{part}}.parquet",
    params:
        label_noise=CFG["comparisons"]["label_noise"],
        rows=lambda w: label_rows(w.policy, w.part),
    log:
        f"{OUT}/logs/labels/{{policy}}{{rep}}/part{{part}}.log",
    benchmark:
        f"{OUT}/benchmarks/labels/{{policy}}{{rep}}/part{{part}}.tsv"
    threads: job_threads("gold")
    priority: 4
    resources:
        mem_mb=mem("gold", base=4000),
        runtime=runtime("gold", base=30, rule="labels"),
        gpu_mem_mb=gpu_mem("labels"),
        gpu=1 if "hf" in CFG["gold"] else 0,
    conda:
        CONDA_ENV
    shell:
        "overopt comparisons --pairs {input.pairs} --gold {input.gold} --out {output}"
        " --label-noise {params.label_noise} --rows {params.rows} --threads {threads} > {log} 2>&1"


rule comparisons:
    input:
        lambda w: label_part_files(w.policy, w.rep),
    output:
        pairs=f"{OUT}/comparisons/{{policy}}{{rep}}.parquet",
        stats=f"{OUT}/comparisons/{{policy}}{{rep}}.json",
    log:
        f"{OUT}/logs/comparisons/{{policy}}{{rep}}.log",
    threads: 1
    resources:
        mem_mb=mem(base=2000),
        runtime=runtime(base=10),
    conda:
        CONDA_ENV
    shell:
        "overopt merge-comparisons --parts {input} --out {output.pairs} > {log} 2>&1"
