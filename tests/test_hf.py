"""The `hf:` code path on tiny Hugging Face models built here: LoRA, quantized gold, the
smoke pipeline end to end on a BPE tokenizer that differs from the gold's."""

import copy

import numpy as np
import pandas as pd
import pytest
import torch

import hf_world
from conftest import snakemake_cmd, write_config, killed_after


@pytest.fixture(scope="package")
def world(tmp_path_factory):
    return hf_world.build(tmp_path_factory.mktemp("hf_world"))


def hf_config(smoke_config, world):
    """The smoke config on hf: models: a LoRA policy, two proxies (one full, one LoRA) in two grid
    cells so that one PPO run covers LoRA on both sides, a 4-bit gold on its own tokenizer."""
    cfg = copy.deepcopy(smoke_config)
    cfg["policies"] = ["p"]
    cfg["reward_models"] = ["r1", "r2"]
    cfg["data_sizes"] = [32, 64]
    cfg["subgrids"] = [{"reward_models": ["r1"], "data_sizes": [32]}, {"reward_models": ["r2"], "data_sizes": [64]}]
    cfg["comparisons"].update(train_pairs=64, val_pairs=16)  # half the smoke's: the 4-bit gold is slow on CPU
    cfg["models"] = {
        "p": {"hf": world["policy"], "lora": {"r": 4, "alpha": 8}},
        "r1": {"hf": world["small"]},
        "r2": {"hf": world["large"], "lora": {"r": 4, "alpha": 8, "target_modules": ["query_key_value", "dense"]}},
    }
    cfg["gold"] = {"hf": world["gold"], "quantize": "4bit"}
    cfg["world"] = {"prompt_chars": 40, "completion_tokens": 8,
                    "prompts": {"path": world["prompts"], "column": "text", "heldout": 20}}
    cfg["rl"].update(policies=["p"], data_sizes=[64])
    cfg["kl_penalties"] = [0]
    return cfg


def test_hf_smoke_pipeline(smoke_config, world, tmp_path):
    """Through Snakemake to the best-of-n fits and a PPO run (the RL fit and the figures are the
    tiny smoke test's business)."""
    from safetensors import safe_open

    from overopt.config import validate

    cfg = hf_config(smoke_config, world)
    validate(cfg)
    write_config(tmp_path, cfg)
    r = snakemake_cmd(tmp_path, "--cores", "2", "results/fits/bon.csv", "results/rl/p/r2/n64/kl0/s0.csv",
                      "results/tables/rm_metrics.csv", "results/comparisons/p.parquet")
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    res = tmp_path / "results"
    prompts = pd.read_parquet(res / "prompts.parquet")
    held = set(prompts.loc[prompts["split"] == "heldout", "prompt"])
    assert len(held) == 20
    # the pool samples held-out prompts only, comparisons training prompts only
    assert set(pd.read_parquet(res / "pool/p.parquet")["prompt"]) <= held
    pairs = pd.read_parquet(res / "comparisons/p.parquet")
    assert not set(pairs["prompt"]) & held and len(pairs) == 80
    # the LoRA proxy stores its adapter and head, not its base; the full proxy stores everything
    lora_dir, full_dir = res / "rm/p/r2/n64/s0", res / "rm/p/r1/n32/s0"
    assert (lora_dir / "adapter_model.safetensors").exists() and (lora_dir / "base.json").exists()
    with safe_open(str(lora_dir / "adapter_model.safetensors"), "pt") as f:
        keys = list(f.keys())
    assert any("lora_A" in k for k in keys) and any("score" in k for k in keys)
    assert not any("lora" not in k and "score" not in k for k in keys), keys
    assert (full_dir / "model.safetensors").exists()
    # reloaded from its directory (base + adapter + head), the LoRA proxy scores as it did when trained
    import json

    from overopt.rm import evaluate, load_proxy

    # (with the smoke config's base-likelihood readout: the frozen base comes back from the spec it recorded)
    model, tok, ref, readout = load_proxy(lora_dir)
    assert ref is not None and (lora_dir / "reference.json").exists() and (full_dir / "reference.json").exists()
    val = evaluate(model, tok, pairs[pairs["split"] == "val"], str(lora_dir / "reference.json"), readout)
    metrics = json.loads((lora_dir / "metrics.json").read_text())
    assert val["val_loss"] == pytest.approx(metrics["val_loss"], abs=1e-6) and metrics["lora"]
    assert metrics["trainable_params"] < 0.2 * metrics["params"]
    # PPO with a LoRA policy: its reference is the adapter-disabled policy, identical at step 0
    rl = pd.read_csv(res / "rl/p/r2/n64/kl0/s0.csv")
    # at step 0 the adapter is a no-op: pi_init's KL to itself, to float rounding (the sampler's
    # cached pass against a full pass)
    assert abs(rl["kl"].iloc[0]) < 1e-5 and rl["step"].iloc[-1] == cfg["rl"]["steps"]
    assert rl["kl"].iloc[-1] != 0.0  # the adapter did move the policy
    assert '"quantize": "4bit"' in (res / "gold/gold.json").read_text()
    scores = pd.read_parquet(res / "scores/p/r2/n64/s0.parquet")
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


def test_a_causal_lm_is_refused_as_gold(world):
    """A checkpoint without a trained scalar head would get a random one: a random gold."""
    from overopt.gold import HFGold

    with pytest.raises(ValueError, match="trained scalar head") as e:
        HFGold(world["policy"])  # a GPT-NeoX causal LM
    assert "score.weight" in str(e.value)



def test_a_chat_template_gold_scores_the_conversation_its_template_writes(world, tmp_path):
    """`template: chat`: the gold reads the prompt as the user's turn and the completion as the
    assistant's, in its tokenizer's own chat template, and nothing else."""
    from overopt.gold import HFGold, build_gold, load_gold

    prompts, comps = ["The value of x is", "A list is"], [" 3, not 4", " a mutable sequence"]
    build_gold({"hf": world["gold_chat"], "template": "chat"}, str(tmp_path / "gold"), None, "", 8, 8, seed=0)
    gold = load_gold(tmp_path / "gold")
    written = [f"<|user|>{p}<|end|><|assistant|>{c}<|end|>" for p, c in zip(prompts, comps)]
    assert gold.texts(prompts, comps) == written
    raw = HFGold(world["gold_chat"])  # the same model reading raw text
    np.testing.assert_allclose(gold.score(prompts, comps), raw.score(written, ["", ""]), rtol=0, atol=1e-6)
    assert np.abs(gold.score(prompts, comps) - raw.score(prompts, comps)).max() > 1e-3
    with pytest.raises(ValueError, match="has no chat template"):
        HFGold(world["gold"], template="chat")


def test_a_chat_template_policy_is_prompted_with_its_user_turn_and_proxies_read_their_own(world, tmp_path, monkeypatch):
    """The pool stores raw prompts; a chat policy samples after its generation prompt, and a proxy
    on a chat base trains on and scores the rendered conversation."""
    import overopt.models as models
    import overopt.rm as rm_mod
    from overopt.pool import make_pool, score_proxy
    from overopt.rm import train_rm

    seen = []
    real = models.sample_texts
    monkeypatch.setattr(models, "sample_texts", lambda m, t, ps, *a, **k: seen.extend(ps) or real(m, t, ps, *a, **k))
    policy = _spec(tmp_path, "policy", hf=world["policy_chat"], template="chat")
    make_pool(policy, str(tmp_path / "pool.parquet"), prompts=3, samples=4, prompt_chars=30, completion_tokens=4,
              batch_size=8, seed=0, threads=1, prompt_file=None)
    pool = pd.read_parquet(tmp_path / "pool.parquet")
    assert seen == [f"<|user|>{p}<|end|><|assistant|>" for p in pool["prompt"]]
    assert not pool["prompt"].str.contains("<|user|>", regex=False).any()

    base = _spec(tmp_path, "base", hf=world["policy_chat"], template="chat")
    words = pool["prompt"].tolist() * 8
    cmp = pd.DataFrame({"pair_id": range(24), "prompt": words[:24], "completion_a": [" yes"] * 24,
                        "completion_b": [" no"] * 24, "label": [1, 0] * 12, "gold_label": [1, 0] * 12,
                        "split": ["train"] * 20 + ["val"] * 4})
    cmp.to_parquet(tmp_path / "cmp.parquet")
    read = []
    real_rewards = rm_mod.rewards
    monkeypatch.setattr(rm_mod, "rewards", lambda m, t, texts, *a, **k: read.extend(texts) or real_rewards(m, t, texts, *a, **k))
    metrics = train_rm(base, comparisons=str(tmp_path / "cmp.parquet"), out=str(tmp_path / "rm"), data_size=20, seed=0,
                       epochs=1, batch_size=4, lr=1e-3, threads=1, policy="p", rm="r")
    assert metrics["template"] == "chat"
    assert read and all(t.startswith("<|user|>") and t.endswith("<|end|>") for t in read)
    pool[["prompt_id", "sample_id"]].assign(gold=0.0).to_parquet(tmp_path / "gold.parquet")
    read.clear()
    seen_scored = []
    real_by_prompt = rm_mod.rewards_by_prompt
    monkeypatch.setattr(rm_mod, "rewards_by_prompt",
                        lambda m, t, ps, cs, **k: seen_scored.extend(p + c for p, c in zip(ps, cs)) or real_by_prompt(m, t, ps, cs, **k))
    score_proxy(str(tmp_path / "pool.parquet"), str(tmp_path / "gold.parquet"), str(tmp_path / "rm"),
                str(tmp_path / "scores.parquet"), threads=1, dtype="float32")
    assert seen_scored == [f"<|user|>{p}<|end|><|assistant|>{c}<|end|>" for p, c in zip(pool["prompt"], pool["completion"])]


def _spec(tmp_path, name, **spec):
    """An hf: spec file, as the workflow's model_spec rule writes it."""
    from overopt.util import write_json

    write_json(spec, tmp_path / f"{name}.json")
    return str(tmp_path / f"{name}.json")


def _toy_ppo(world, policy, tmp_path, out, steps=4):
    """A few PPO steps of the hf policy against a text reward (spaces in the completion)."""
    from overopt.ppo import PPOConfig, run_ppo

    prompts = pd.read_json(world["prompts"], lines=True)["text"].tolist()
    reward = lambda ps, comps: np.array([c.count(" ") for c in comps], dtype=float)
    cfg = PPOConfig(steps=steps, batch_size=8, minibatch_size=4, epochs=1, lr=1e-2, eval_every=2, eval_prompts=4,
                    eval_samples=2, checkpoint_every=2, seed=0)
    return run_ppo(policy, reward, reward, str(tmp_path / out), str(tmp_path / f"{out}.ckpt"), prompts, prompts[:4],
                   6, cfg, threads=1)


def test_killed_lora_ppo_run_resumes_to_the_same_csv(world, tmp_path, resumed_from):
    """The LoRA checkpoint holds only the adapter (the base is pi_init); resuming gives the same run."""
    from safetensors import safe_open

    policy = _spec(tmp_path, "p", hf=world["policy"], lora={"r": 4, "alpha": 8})
    whole = _toy_ppo(world, policy, tmp_path, "whole.csv")
    with pytest.raises(KeyboardInterrupt), killed_after(2):
        _toy_ppo(world, policy, tmp_path, "part.csv")
    with safe_open(str(tmp_path / "part.csv.ckpt" / "policy.safetensors"), "pt") as f:
        keys = list(f.keys())
    assert keys and all("lora_" in k for k in keys), keys
    resumed = _toy_ppo(world, policy, tmp_path, "part.csv")
    assert resumed_from == [2]
    pd.testing.assert_frame_equal(whole, resumed)
    assert abs(whole["kl"].iloc[0]) < 1e-5 and whole["kl"].iloc[-1] > 0


def test_quantized_pi_init_reference_is_a_separate_frozen_copy(world, tmp_path):
    """A full fine-tuning policy with `quantize:` keeps an 8-bit pi_init for the KL; the policy
    itself (and every trained weight) stays full precision. The quantization error shows up as
    a small KL at step 0, where the policy still is pi_init."""
    import bitsandbytes as bnb

    from overopt.models import load_causal

    spec = _spec(tmp_path, "p", hf=world["policy"], quantize="8bit")
    assert any(isinstance(m, bnb.nn.Linear8bitLt) for m in load_causal(spec, frozen=True).modules())
    assert not any(isinstance(m, bnb.nn.Linear8bitLt) for m in load_causal(spec).modules())
    run = _toy_ppo(world, spec, tmp_path, "q.csv", steps=2)
    assert 1e-5 < abs(run["kl"].iloc[0]) < 0.05  # beyond float rounding, within quantization error


def test_proxy_scores_reuse_the_prompt_cache_only_where_bpe_splits_at_the_prompt(world, monkeypatch):
    """With BPE, a completion that goes on with the prompt's last word merges across the
    boundary: that one is scored on the joined text, its prompt's other completions on the
    reused prompt cache, and every number equals scoring the joined texts."""
    from overopt import rm

    from overopt.text import CharCodec

    tok, model, _ = _proxy_and_batch(world)
    assert CharCodec.of(tok) is None  # BPE goes through the tokenizer itself
    prompts = [p for p in ("The value of x is th", "Return an") for _ in range(6)]
    # "th" + "e sum" and "an" + "d the" merge into "the" and "and"; the space-led ones split
    comps = [" sum of all", "e sum", " last one", "d the", " first", " object"] * 2
    joined = [p + c for p, c in zip(prompts, comps)]
    want = rm.rewards(model, tok, joined)
    fallback = []
    scored_alone = rm.rewards
    monkeypatch.setattr(rm, "rewards", lambda m, t, texts, **kw: fallback.extend(texts) or scored_alone(m, t, texts))
    got = rm.rewards_by_prompt(model, tok, prompts, comps, batch_size=4)
    np.testing.assert_allclose(got, want, atol=1e-5)
    merged = [j for p, c, j in zip(prompts, comps, joined)
              if tok(j, add_special_tokens=False)["input_ids"]
              != tok(p, add_special_tokens=False)["input_ids"] + tok(c, add_special_tokens=False)["input_ids"]]
    assert merged and sorted(fallback) == sorted(merged) and len(fallback) < len(joined)
    assert np.ptp(want) > 0


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_policy_and_proxy_run_on_the_gpu(world):
    from overopt.models import load_causal, load_reward, load_tokenizer, sample_texts
    from overopt.rm import rewards

    tok = load_tokenizer(world["policy"])
    policy = load_causal(world["policy"])
    assert policy.device.type == "cuda"
    texts = sample_texts(policy, tok, ["The value of x is"] * 4, 6, 4, seed=0)
    proxy = load_reward(world["large"], pad_token_id=tok.pad_token_id)
    assert proxy.device.type == "cuda"
    assert len(texts) == 4 and np.isfinite(rewards(proxy, tok, texts)).all()
