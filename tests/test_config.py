import copy

import pytest
import yaml

from conftest import ROOT, snakemake_cmd, write_config
from overopt.config import ConfigError, tiny_params, validate


def _bad(cfg, edit):
    cfg = copy.deepcopy(cfg)
    edit(cfg)
    return cfg


BAD = {
    "unknown top-level key": (lambda c: c.update(rm_sizes=[1]), "rm_sizes"),
    "unknown nested key": (lambda c: c["models"]["r1"]["tiny"].update(n_embed=8), "models.r1.tiny.n_embed"),
    "negative data size": (lambda c: c.update(data_sizes=[64, -5]), "data_sizes.1"),
    "zero data size": (lambda c: c.update(data_sizes=[0]), "data_sizes.0"),
    "data size above the comparison pool": (lambda c: c.update(data_sizes=[100000]), "data_sizes[0]"),
    "reward model not defined": (lambda c: c.update(reward_models=["r1", "r9"]), "reward_models[1]"),
    "policy not defined": (lambda c: c.update(policies=["nope"]), "policies[0]"),
    "seed not an integer": (lambda c: c.update(seeds=[0, 1.5]), "seeds.1"),
    "unknown scoring precision": (lambda c: c["bon"].update(score_dtype="fp16"), "bon.score_dtype"),
    "seed a string": (lambda c: c.update(seeds=["zero"]), "seeds.0"),
    "model with two specs": (lambda c: c["models"].update(r1={"tiny": c["models"]["r1"]["tiny"], "hf": "x"}), "models.r1"),
    "gold reference undefined": (lambda c: c["gold"]["tiny"].update(reference="missing"), "gold.tiny.reference"),
    "gold not larger than proxies": (lambda c: c["gold"]["tiny"].update(reference="r1"), "gold.tiny.reference"),
    "gold fluency with two references": (lambda c: c["gold"]["tiny"].update(fluency_ngram=5), "gold.tiny"),
    "gold fluency without a reference": (lambda c: c["gold"]["tiny"].pop("reference"), "gold.tiny"),
    "more gold parts than prompts": (lambda c: c["bon"].update(gold_parts=33), "bon.gold_parts"),
    "gold tent without a cap": (lambda c: c["gold"]["tiny"].update(count_over=1.0, count_cap=None), "gold.tiny.count_over"),
    "gold n-gram order too high": (lambda c: c["gold"]["tiny"].update(fluency_ngram=12), "gold.tiny.fluency_ngram"),
    "penalty sweep on an unknown RM": (lambda c: c["rl"].update(penalty_reward_models=["r9"]),
                                       "rl.penalty_reward_models[0]"),
    "heads do not divide width": (lambda c: c["models"]["r2"]["tiny"].update(n_head=3), "models.r2.tiny"),
    "label noise out of range": (lambda c: c["comparisons"].update(label_noise=0.7), "comparisons.label_noise"),
    "missing section": (lambda c: c.pop("rm_train"), "rm_train"),
    "RM learning rate for a model not in the grid": (lambda c: c["rm_train"].update(lr_by_model={"p": 0.01}),
                                                     "rm_train.lr_by_model.p"),
    "RM learning rate not positive": (lambda c: c["rm_train"].update(lr_by_model={"r1": 0}), "rm_train.lr_by_model.r1"),
    # hf: specs
    "hf option on a tiny model": (lambda c: c["models"]["r1"].update(tokenizer="gpt2"), "models.r1.tokenizer"),
    "quantized proxy": (lambda c: c["models"].update(r1={"hf": "x", "quantize": "4bit"}), "models.r1.quantize"),
    "quantized LoRA policy": (lambda c: c["models"].update(p={"hf": "x", "lora": {"r": 4}, "quantize": "8bit"}),
                              "models.p.quantize"),
    "unknown quantization": (lambda c: c.update(gold={"hf": "x", "quantize": "3bit"}), "gold.quantize"),
    "unknown LoRA key": (lambda c: c["models"].update(p={"hf": "x", "lora": {"rank": 4}}), "models.p.lora.rank"),
    "gold both tiny and hf": (lambda c: c["gold"].update(hf="x"), "gold"),
    "gold option without hf": (lambda c: c["gold"].update(quantize="4bit"), "gold.quantize"),
    "prompts not jsonl or parquet": (lambda c: c["world"].update(prompts={"path": "p.csv", "heldout": 8}),
                                     "world.prompts.path"),
    "pool larger than held-out prompts": (lambda c: c["world"].update(prompts={"path": "p.jsonl", "heldout": 2}),
                                          "bon.prompts"),
    "replicates' pools beyond the held-out prompts": (
        lambda c: (c.update(seeds=[0, 1, 2], replicates={"pool": True}),
                   c["world"].update(prompts={"path": "p.jsonl", "heldout": 8})), "replicates.pool"),
    "LoRA rank zero": (lambda c: c["models"].update(p={"hf": "x", "lora": {"r": 0}}), "models.p.lora.r"),
    "LoRA dropout of 1": (lambda c: c["models"].update(p={"hf": "x", "lora": {"dropout": 1.0}}), "models.p.lora.dropout"),
    "negative parameter count": (lambda c: c["models"].update(p={"hf": "x", "params": -1}), "models.p.params"),
    "prompts file without held-out count": (lambda c: c["world"].update(prompts={"path": "p.jsonl"}), "world.prompts"),
    "unknown prompts key": (lambda c: c["world"].update(prompts={"path": "p.jsonl", "heldout": 8, "split": "x"}),
                            "world.prompts.split"),
}


def test_hf_spec_validates_with_defaults(smoke_config):
    cfg = _bad(smoke_config, lambda c: (c["models"].update(p={"hf": "org/m", "params": 1e8, "lora": {"r": 4}}),
                                        c["world"].update(prompts={"path": "p.jsonl", "heldout": 8})))
    out = validate(cfg)
    assert out["world"]["prompts"] == {"path": "p.jsonl", "heldout": 8, "column": "prompt", "seed": 0}
    assert out["models"]["p"]["lora"] == {"r": 4}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_config_names_the_key(smoke_config, case):
    edit, key = BAD[case]
    with pytest.raises(ConfigError) as e:
        validate(_bad(smoke_config, edit))
    assert key in str(e.value), str(e.value)


@pytest.mark.parametrize("case", ["unknown nested key", "zero data size", "reward model not defined", "seed not an integer"])
def test_bad_config_stops_snakemake_before_any_job(smoke_config, tmp_path, case):
    edit, key = BAD[case]
    write_config(tmp_path, _bad(smoke_config, edit))
    r = snakemake_cmd(tmp_path, "--cores", "1")
    assert r.returncode != 0
    assert key in r.stdout + r.stderr
    assert not (tmp_path / "results").exists()


def test_shipped_configs_validate(smoke_config):
    cfg = validate(yaml.safe_load((ROOT / "config.yaml").read_text()))
    assert cfg["comparisons"]["label_noise"] == 0.0  # defaults are filled in
    validate(smoke_config)


def test_tiny_params_matches_built_model():
    from overopt.text import build_char_tokenizer
    from overopt.models import count_params, tiny_config
    from transformers import GPT2LMHeadModel

    tok = build_char_tokenizer("".join(chr(i) for i in range(32, 32 + 96)) + "a")
    spec = {"n_layer": 2, "n_embd": 32, "n_head": 4}
    model = GPT2LMHeadModel(tiny_config(spec, tok))
    assert tiny_params(spec, vocab=len(tok)) == count_params(model)


CONFIGS = sorted(p for p in (ROOT / "config").rglob("*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_every_config_file_validates(path):
    """config/experiments/ holds overlays on config.yaml (merged as Snakemake merges a
    --configfile into the workflow's config); every other file is a complete config."""
    from snakemake.utils import update_config

    cfg = yaml.safe_load(path.read_text())
    if path.parent.name == "experiments":
        base = yaml.safe_load((ROOT / "config.yaml").read_text())
        update_config(base, cfg)
        cfg = base
    validate(cfg)


def test_an_overlay_changes_only_its_keys_in_snakemakes_merge(tmp_path):
    """Snakemake merges a --configfile overlay into config.yaml: the W11 overlay's dry run has the
    default study's jobs, in its own outdir, and its gold differs only in the runs weight."""
    overlay = ROOT / "config" / "experiments" / "w11-runs-quarter.yaml"
    r = snakemake_cmd(tmp_path, "--configfile", str(ROOT / "config.yaml"), str(overlay),
                      "-n", "--printshellcmds")
    assert r.returncode == 0, r.stderr[-2000:]
    gold = next(line for line in r.stdout.splitlines() if "overopt gold " in line)
    assert '"runs":-0.25' in gold and '"clumps":-0.8' in gold and '"fluency":0.5' in gold and "results-w11/gold" in gold
    assert "results-w11/rl/lm-m/lm-l/n4000/kl0.05/s3.csv" in r.stdout


def test_lint_is_clean():
    """`snakemake --lint` on the default config: no warning of any kind."""
    r = snakemake_cmd(ROOT, "--lint")
    assert r.returncode == 0 and "Lints for" not in r.stdout + r.stderr, (r.stdout + r.stderr)[-3000:]
