# Real scale: hf: model spec files and prompts from a file (see workflow/overopt/hf.py, prompts.py).


rule model_spec:
    output:
        f"{OUT}/hf/{{model}}.json",
    params:
        # the spec as a param: Snakemake reruns a model's jobs when its spec changes
        spec=lambda w: canonical(MODELS[w.model]),
    log:
        f"{OUT}/logs/hf/{{model}}.log",
    run:
        # in the Snakemake process: a subprocess would spend seconds importing torch to write a file
        write_spec(params.spec, output[0], log[0])


rule prompts:
    input:
        PROMPTS["path"] if PROMPTS else [],
    output:
        f"{OUT}/prompts.parquet",
    params:
        column=PROMPTS["column"] if PROMPTS else "",
        heldout=PROMPTS["heldout"] if PROMPTS else 0,
        seed=PROMPTS["seed"] if PROMPTS else 0,
        prompt_chars=CFG["world"]["prompt_chars"],
    log:
        f"{OUT}/logs/prompts.log",
    conda:
        CONDA_ENV
    shell:
        "overopt prompts --path {input} --column {params.column} --heldout {params.heldout}"
        " --seed {params.seed} --prompt-chars {params.prompt_chars} --out {output} > {log} 2>&1"


# two cheap file writes: no reason to queue them on a cluster
localrules:
    model_spec,
    prompts,
