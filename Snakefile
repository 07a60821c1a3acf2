# overopt: scaling laws for reward model overoptimization (Gao, Schulman & Hilton 2022).
# Wiring only: the science lives in the `overopt` package (workflow/overopt/).

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
