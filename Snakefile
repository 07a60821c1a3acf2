# overopt: scaling laws for reward model overoptimization (Gao, Schulman & Hilton 2022).
# Wiring only: the science lives in the `overopt` package (workflow/overopt/).

# A config given with --configfile replaces config.yaml instead of being merged into it: a merge
# would mix the default study's tiny models and gold into a real-scale config.
if not workflow.overwrite_configfiles:

    configfile: "config.yaml"


report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"
include: "workflow/rules/world.smk"
include: "workflow/rules/hf.smk"
include: "workflow/rules/rm.smk"
include: "workflow/rules/bon.smk"
include: "workflow/rules/rl.smk"
include: "workflow/rules/scaling.smk"
include: "workflow/rules/figures.smk"


rule all:
    input:
        all_targets(),
    default_target: True
