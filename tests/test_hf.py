"""The `hf:` code path on tiny Hugging Face models built here: LoRA, quantized gold, the
smoke pipeline end to end on a BPE tokenizer that differs from the gold's."""

import copy

import numpy as np
import pandas as pd
import pytest
import torch

import hf_world
from conftest import snakemake_cmd, write_config


@pytest.fixture(scope="session")
def world(tmp_path_factory):
    return hf_world.build(tmp_path_factory.mktemp("hf_world"))


def hf_config(smoke_config, world):
    """The smoke config on hf: models: a LoRA policy, two proxies (one full, one LoRA) in two grid
    cells so that one PPO run covers LoRA on both sides, a 4-bit gold on its own tokenizer."""
    cfg = copy.deepcopy(smoke_config)
    cfg["policies"] = ["p"]
    cfg["reward_models"] = ["r1", "r2"]
    cfg["subgrids"] = [{"reward_models": ["r1"], "data_sizes": [64]}, {"reward_models": ["r2"], "data_sizes": [128]}]
    cfg["models"] = {
        "p": {"hf": world["policy"], "lora": {"r": 4, "alpha": 8}},
        "r1": {"hf": world["small"]},
        "r2": {"hf": world["large"], "lora": {"r": 4, "alpha": 8, "target_modules": ["query_key_value", "dense"]}},
    }
    cfg["gold"] = {"hf": world["gold"], "quantize": "4bit"}
    cfg["world"] = {"prompt_chars": 40, "completion_tokens": 8,
                    "prompts": {"path": world["prompts"], "column": "text", "heldout": 20}}
    cfg["rl"].update(policies=["p"], data_sizes=[128])
    cfg["kl_penalties"] = [0]
    return cfg


def test_hf_smoke_pipeline(smoke_config, world, tmp_path):
    """Through Snakemake up to the fits (the figures are the tiny smoke test's business)."""
    from safetensors import safe_open

    from overopt.config import validate

    cfg = hf_config(smoke_config, world)
    validate(cfg)
    write_config(tmp_path, cfg)
    r = snakemake_cmd(tmp_path, "--cores", "2", "results/fits/bon.csv", "results/fits/rl.csv",
                      "results/tables/rm_metrics.csv")
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    res = tmp_path / "results"
    prompts = pd.read_parquet(res / "prompts.parquet")
    held = set(prompts.loc[prompts["split"] == "heldout", "prompt"])
    assert len(held) == 20
    # the pool samples held-out prompts only, comparisons training prompts only
    assert set(pd.read_parquet(res / "pool/p.parquet")["prompt"]) <= held
    pairs = pd.read_parquet(res / "comparisons/p.parquet")
    assert not set(pairs["prompt"]) & held and len(pairs) == 160
    # the LoRA proxy stores its adapter and head, not its base; the full proxy stores everything
    lora_dir, full_dir = res / "rm/p/r2/n128/s0", res / "rm/p/r1/n64/s0"
    assert (lora_dir / "adapter_model.safetensors").exists() and (lora_dir / "base.json").exists()
    with safe_open(str(lora_dir / "adapter_model.safetensors"), "pt") as f:
        keys = list(f.keys())
    assert any("lora_A" in k for k in keys) and any("score" in k for k in keys)
    assert not any("lora" not in k and "score" not in k for k in keys), keys
    assert (full_dir / "model.safetensors").exists()
    # PPO with a LoRA policy: its reference is the adapter-disabled policy, identical at step 0
    rl = pd.read_csv(res / "rl/p/r2/n128/kl0/s0.csv")
    assert rl["kl"].iloc[0] == 0.0 and rl["step"].iloc[-1] == cfg["rl"]["steps"]
    assert rl["kl"].iloc[-1] != 0.0  # the adapter did move the policy
    assert '"quantize": "4bit"' in (res / "gold/gold.json").read_text()
    scores = pd.read_parquet(res / "scores/p/r2/n128/s0.parquet")
    assert len(scores) == cfg["bon"]["prompts"] * cfg["bon"]["samples"] and scores["gold"].std() > 0


def _proxy_and_batch(world):
    from overopt.models import load_reward, load_tokenizer

    tok = load_tokenizer(world["large"])
    model = load_reward(world["large"], pad_token_id=tok.pad_token_id)
    texts = ["The value of x is", "A list is a mutable sequence", "Return the object", "for loops"]
    return tok, model, tok(texts, return_tensors="pt", padding=True, add_special_tokens=False)


def test_lora_rm_training_changes_only_the_adapter_and_head(world):
    from overopt.hf import add_lora, trainable_parameters
    from overopt.rm import bt_loss

    torch.manual_seed(0)
    tok, model, enc = _proxy_and_batch(world)
    model = add_lora(model, {"r": 4, "alpha": 8}, "SEQ_CLS")
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    opt = torch.optim.AdamW(trainable_parameters(model), lr=1e-2)
    for _ in range(3):
        r = model(**enc).logits[:, 0]
        loss = bt_loss(r[:2], r[2:])
        opt.zero_grad()
        loss.backward()
        opt.step()
    changed = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    assert changed, "nothing trained"
    assert all("lora_" in n or "score" in n for n in changed), sorted(changed)
    assert any("lora_B" in n for n in changed) and any("score" in n for n in changed)
    frozen = [n for n in before if "lora_" not in n and "score" not in n]
    assert frozen and not changed & set(frozen)


def test_lora_policy_reference_is_the_adapter_disabled_policy(world):
    from overopt.hf import add_lora, trainable_parameters
    from overopt.models import load_causal, load_tokenizer

    torch.manual_seed(0)
    tok = load_tokenizer(world["policy"])
    x = tok(["The value of x is the"], return_tensors="pt", add_special_tokens=False)["input_ids"]
    pi_init = load_causal(world["policy"]).eval()
    policy = add_lora(load_causal(world["policy"]), {"r": 4, "alpha": 8}, "CAUSAL_LM")
    opt = torch.optim.Adam(trainable_parameters(policy), lr=1e-2)
    for _ in range(2):
        loss = policy(input_ids=x, labels=x).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    policy.eval()
    with torch.no_grad():
        ref = pi_init(input_ids=x).logits
        trained = policy(input_ids=x).logits
        with policy.disable_adapter():
            disabled = policy(input_ids=x).logits
    assert torch.equal(disabled, ref)
    assert (trained - ref).abs().max() > 1e-3
    # one copy of the base weights: the adapter adds a small fraction
    n_base = sum(p.numel() for p in pi_init.parameters())
    assert sum(p.numel() for p in trainable_parameters(policy)) < 0.2 * n_base


# Measured on this tiny gold over 240 texts: 8-bit max |error| 0.024 gold std (rank correlation
# 0.9999), nf4 0.25 gold std (0.997). Bounds: about 2x the measured error.
QUANT_BOUNDS = {"8bit": (0.05, 0.999), "4bit": (0.5, 0.99)}


@pytest.mark.parametrize("mode", sorted(QUANT_BOUNDS))
def test_quantized_gold_agrees_with_full_precision(world, mode):
    from scipy.stats import spearmanr

    from overopt.gold import HFGold

    words = open(world["prompts"]).read().split()
    rng = np.random.default_rng(0)
    prompts = [" ".join(rng.choice(words, 5)) for _ in range(240)]
    comps = [" " + " ".join(rng.choice(words, 6)) for _ in range(240)]
    full = HFGold(world["gold"]).score(prompts, comps)
    q = HFGold(world["gold"], quantize=mode).score(prompts, comps)
    max_err, rho = np.abs(q - full).max() / full.std(), spearmanr(q, full)[0]
    print(f"{mode}: max |error| {max_err:.3f} gold std, rank correlation {rho:.4f}")
    assert not np.array_equal(q, full), "not quantized"
    assert max_err < QUANT_BOUNDS[mode][0] and rho > QUANT_BOUNDS[mode][1]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_quantized_gold_on_gpu(world):
    from overopt.gold import HFGold

    g = HFGold(world["gold"], quantize="4bit")
    assert g.model.device.type == "cuda"
    assert np.isfinite(g.score(["The value"], [" of x"])).all()
