# overopt: scaling laws for reward model overoptimization (Gao, Schulman & Hilton 2022).
# Wiring only: the science lives in the `overopt` package (workflow/overopt/).
from snakemake.utils import min_version

min_version("9.0")


# A --configfile is merged into this one (an overlay, as in config/experiments/); a complete
# config of its own (config/pythia.yaml) is given with --replace-workflow-config.
configfile: "config.yaml"


report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"
include: "workflow/rules/world.smk"
include: "workflow/rules/hf.smk"
include: "workflow/rules/rm.smk"
include: "workflow/rules/shards.smk" if SHARD else "workflow/rules/pool.smk"  # bon.shard_prompts
include: "workflow/rules/bon.smk"
include: "workflow/rules/rl.smk"
include: "workflow/rules/scaling.smk"
include: "workflow/rules/figures.smk"


onstart:
    if CFG["fork_server"] and workflow.local_exec:
        FORK_SERVER.start()


onsuccess:
    FORK_SERVER.stop()


onerror:
    FORK_SERVER.stop()


rule all:
    input:
        all_targets(),
    default_target: True
