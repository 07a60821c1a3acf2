import numpy as np
import torch
from transformers import GPT2Config, GPT2ForSequenceClassification

from overopt.text import build_char_tokenizer, corpus_split
from overopt.rm import rewards, rewards_by_prompt


import pytest

from conftest import tiny_base


@pytest.mark.parametrize("path", ["direct", "generic"])
def test_rewards_by_prompt_equal_rewards_on_joined_texts(path, monkeypatch):
    # the tiny world's GPT-2 runs the written-out forward pass; every other model the HF cache path
    if path == "generic":
        monkeypatch.setenv("OVEROPT_ENGINE", "hf")
    tok = build_char_tokenizer(corpus_split()[0])
    torch.manual_seed(0)
    cfg = GPT2Config(vocab_size=len(tok), n_positions=64, n_embd=32, n_layer=2, n_head=2,
                     pad_token_id=tok.pad_token_id)
    model = GPT2ForSequenceClassification(cfg)
    rng = np.random.default_rng(0)
    letters = list("abcdefgh ,.")
    prompts = [p for p in ("The quick brown ", "def f(x): ", "Note: ") for _ in range(7)]
    # completions of different lengths, so the batches carry right padding
    comps = ["".join(rng.choice(letters, rng.integers(3, 12))) for _ in prompts]
    order = rng.permutation(len(prompts))  # prompts interleaved, as after any shuffle
    prompts, comps = [prompts[i] for i in order], [comps[i] for i in order]
    want = rewards(model, tok, [p + c for p, c in zip(prompts, comps)])
    got = rewards_by_prompt(model, tok, prompts, comps, batch_size=4)
    np.testing.assert_allclose(got, want, atol=1e-5)
    assert np.ptp(want) > 0  # the test would notice a constant
    # bf16 (`bon.score_dtype`): the body in bf16, the head in float32: close to float32 but
    # not equal to it (the bf16 path really ran), and the model itself left in float32
    low = rewards_by_prompt(model, tok, prompts, comps, batch_size=4, dtype=torch.bfloat16)
    err = np.abs(low - want)
    assert err.max() > 0 and err.max() < 0.05 * np.ptp(want)
    assert all(p.dtype == torch.float32 for p in model.parameters())


def test_logistic_scale_is_the_one_feature_bradley_terry_optimum():
    from scipy.optimize import minimize_scalar

    from overopt.rm import logistic_scale

    rng = np.random.default_rng(0)
    x = rng.normal(0.3, 1.0, 500)  # feature differences, chosen minus rejected, mostly positive
    brute = minimize_scalar(lambda c: np.logaddexp(0, -c * x).sum(), bounds=(-20, 20), method="bounded").x
    assert logistic_scale(x) == pytest.approx(brute, abs=1e-4)
    assert logistic_scale(-x) == pytest.approx(-brute, abs=1e-4)


def test_base_loglik_readout_learns_what_the_frozen_base_knows(tmp_path):
    """Labels that only the base's own likelihood explains: the readout learns them, the
    last-token head alone does not; a saved proxy scores head + c x loglik with no base around."""
    import pandas as pd

    from overopt.pool import score_proxy
    from overopt.models import completion_logprobs
    from overopt.models import load_causal
    from overopt.rm import load_proxy, rewards, train_rm

    base, tok = tiny_base(tmp_path, seed=0)
    lm = load_causal(base)
    text = corpus_split()[0]
    rng = np.random.default_rng(0)
    n = 480
    starts = rng.integers(0, len(text) - 40, (n, 3))
    prompts = [text[s : s + 12] for s in starts[:, 0]]
    comp_a = [text[s : s + 12] for s in starts[:, 1]]
    comp_b = [text[s : s + 12] for s in starts[:, 2]]
    ll_a = completion_logprobs(lm, tok, prompts, comp_a)
    ll_b = completion_logprobs(lm, tok, prompts, comp_b)
    label = np.where(ll_a > ll_b, 1, 0)
    df = pd.DataFrame({"pair_id": range(n), "split": ["train"] * 400 + ["val"] * 80, "prompt": prompts,
                       "completion_a": comp_a, "completion_b": comp_b, "gold_a": ll_a, "gold_b": ll_b,
                       "gold_label": label, "label": label})
    df.to_parquet(tmp_path / "cmp.parquet")
    kw = dict(policy="p", rm="r", comparisons=str(tmp_path / "cmp.parquet"), data_size=400, seed=0, epochs=1, batch_size=16, lr=1e-3, threads=1)
    plain = train_rm(str(base), out=str(tmp_path / "plain"), **kw)
    read = train_rm(str(base), out=str(tmp_path / "read"), base_loglik=True, **kw)
    assert read["base_loglik_weight"] > 0
    print("val_acc readout %.3f, head alone %.3f" % (read["val_acc"], plain["val_acc"]))
    assert read["val_acc"] > 0.95 and plain["val_acc"] < 0.8
    assert not (tmp_path / "plain" / "readout.json").exists()

    # the readout weight's own lr. Labels with a quarter flipped, so that its warm start is finite
    # (on separable labels it is ~1e6 and no step can move it): absent, the proxy's lr; tiny, it
    # stays at its warm start whatever the head's lr, where Adam at the head's lr moves it
    flip = rng.random(n) < 0.25
    df.assign(label=np.where(flip, 1 - label, label)).to_parquet(tmp_path / "noisy.parquet")
    kw = {**kw, "comparisons": str(tmp_path / "noisy.parquet"), "lr": 1e-2}
    free, same = (train_rm(str(base), out=str(tmp_path / name), base_loglik=True, readout_lr=r, **kw)
                  for name, r in (("free", None), ("same", 1e-2)))
    assert same["base_loglik_weight"] == free["base_loglik_weight"] and same["val_loss"] == free["val_loss"]
    still = [train_rm(str(base), out=str(tmp_path / f"still{i}"), base_loglik=True, readout_lr=1e-9, **{**kw, "lr": lr})
             for i, lr in enumerate((1e-3, 1e-2))]
    assert still[0]["base_loglik_weight"] == still[1]["base_loglik_weight"]  # the warm start, to the bit
    assert abs(free["base_loglik_weight"] - still[0]["base_loglik_weight"]) > 1e-4  # ~500 float32 ulps at 23

    # the proxy stands alone: its frozen base is copied into it, the original can go
    import shutil

    shutil.rmtree(base)
    model, tok2, ref, readout = load_proxy(tmp_path / "read")
    assert ref is not None and readout.weight == read["base_loglik_weight"] and readout.cap is None
    w = readout.weight
    # best-of-n scoring adds the readout: a pool of 2 prompts x 4 completions, against head + w x loglik
    pool = pd.DataFrame({"prompt_id": np.repeat([0, 1], 4), "sample_id": np.tile(range(4), 2),
                         "prompt": [prompts[0]] * 4 + [prompts[1]] * 4, "completion": comp_a[:8]})
    pool.to_parquet(tmp_path / "pool.parquet")
    pool[["prompt_id", "sample_id"]].assign(gold=0.0).to_parquet(tmp_path / "gold.parquet")
    score_proxy(str(tmp_path / "pool.parquet"), str(tmp_path / "gold.parquet"), str(tmp_path / "read"),
                str(tmp_path / "scores.parquet"), threads=1, dtype="float32")
    want_prompts = [prompts[0]] * 4 + [prompts[1]] * 4
    want = rewards(model, tok, [p + c for p, c in zip(want_prompts, comp_a[:8])]) + w * completion_logprobs(ref, tok, want_prompts, comp_a[:8])
    got = pd.read_parquet(tmp_path / "scores.parquet").sort_values(["prompt_id", "sample_id"])["proxy"].to_numpy()
    np.testing.assert_allclose(got, want - want.mean(), atol=1e-5)


def test_readout_cap_is_learned_only_where_the_likeliest_texts_lose(tmp_path):
    """Labels that prefer likelier text up to a point and reject the likeliest tenth: the cap
    settles below those texts and beats the uncapped readout on validation; where the likeliest
    texts win, no cap is set below them. A saved proxy scores head + c x soft_cap(loglik)."""
    import pandas as pd
    import torch

    from overopt.pool import score_proxy
    from overopt.models import completion_logprobs
    from overopt.models import load_causal
    from overopt.rm import load_proxy, rewards, soft_cap, train_rm

    base, tok = tiny_base(tmp_path, seed=0)
    lm = load_causal(base)
    with torch.no_grad():  # sharper next-token odds: log-likelihoods spread over nats, not tenths
        lm.transformer.wte.weight.mul_(20.0)
    lm.save_pretrained(str(base))
    text = corpus_split()[0]
    rng = np.random.default_rng(1)
    n = 1200
    starts = rng.integers(0, len(text) - 40, (n, 3))
    prompts = [text[s : s + 12] for s in starts[:, 0]]
    comps = [[text[s : s + 12] for s in starts[:, k]] for k in (1, 2)]
    ll = [completion_logprobs(lm, tok, prompts, c) for c in comps]
    top = np.quantile(np.r_[ll[0], ll[1]], 0.9)
    kw = dict(policy="p", rm="r", data_size=1000, seed=0, epochs=1, batch_size=16, lr=1e-3, threads=1, base_loglik=True)
    got = {}
    for name, past in (("lose", -2.0), ("win", 1.0)):
        # likelier is better up to the 90th percentile; past it, worse (lose) or still better (win)
        gold = [np.minimum(x, top) + past * np.maximum(x - top, 0.0) for x in ll]
        label = np.where(gold[0] > gold[1], 1, 0)
        # Bradley-Terry labels, so that no weight separates them
        noisy = (rng.random(n) < 1 / (1 + np.exp(-2.0 * (gold[0] - gold[1])))).astype(int)
        pd.DataFrame({"pair_id": range(n), "split": ["train"] * 1000 + ["val"] * 200, "prompt": prompts,
                      "completion_a": comps[0], "completion_b": comps[1], "gold_a": gold[0], "gold_b": gold[1],
                      "gold_label": label, "label": noisy}).to_parquet(tmp_path / f"{name}.parquet")
        for cap in (False, True):
            got[name, cap] = train_rm(str(base), comparisons=str(tmp_path / f"{name}.parquet"),
                                      out=str(tmp_path / f"{name}{cap}"), readout_cap=cap, **kw)
    likeliest = float(np.max(np.r_[ll[0][:1000], ll[1][:1000]]))
    assert got["lose", False]["base_loglik_cap"] is None
    # below the texts that lose (a flat cap sits under a kink that falls past it), above the median
    assert np.median(np.r_[ll[0], ll[1]]) < got["lose", True]["base_loglik_cap"] < top
    assert got["lose", True]["val_loss"] < got["lose", False]["val_loss"] - 0.1
    assert got["lose", True]["val_acc"] > got["lose", False]["val_acc"] + 0.2
    assert got["win", True]["base_loglik_cap"] >= likeliest  # nothing pushed it down
    assert abs(got["win", True]["val_loss"] - got["win", False]["val_loss"]) < 0.02

    # the cap travels with the proxy; numpy and torch agree on the soft min
    model, tok2, ref, readout = load_proxy(tmp_path / "loseTrue")
    assert readout.cap == got["lose", True]["base_loglik_cap"]
    x = np.linspace(-4, 0, 41)
    np.testing.assert_allclose(soft_cap(x, -1.0), soft_cap(torch.tensor(x), torch.tensor(-1.0)).numpy(), atol=1e-12)
    assert np.all(soft_cap(x, -1.0) <= np.minimum(x, -1.0)) and np.all(soft_cap(x, -1.0) > np.minimum(x, -1.0) - 0.1)
    pool = pd.DataFrame({"prompt_id": np.repeat([0, 1], 4), "sample_id": np.tile(range(4), 2),
                         "prompt": [prompts[0]] * 4 + [prompts[1]] * 4, "completion": comps[0][:8]})
    pool.to_parquet(tmp_path / "pool.parquet")
    pool[["prompt_id", "sample_id"]].assign(gold=0.0).to_parquet(tmp_path / "gold.parquet")
    score_proxy(str(tmp_path / "pool.parquet"), str(tmp_path / "gold.parquet"), str(tmp_path / "loseTrue"),
                str(tmp_path / "scores.parquet"), threads=1, dtype="float32")
    p8 = pool["prompt"].tolist()
    want = rewards(model, tok2, [p + c for p, c in zip(p8, comps[0][:8])]) + readout.weight * soft_cap(
        completion_logprobs(ref, tok2, p8, comps[0][:8]), readout.cap)
    got_s = pd.read_parquet(tmp_path / "scores.parquet").sort_values(["prompt_id", "sample_id"])["proxy"].to_numpy()
    np.testing.assert_allclose(got_s, want - want.mean(), atol=1e-5)


def test_warm_cap_recovers_a_known_cap_and_leaves_uncapped_data_alone():
    from overopt.rm import soft_cap, warm_cap

    rng = np.random.default_rng(0)
    llc, llr = rng.normal(-2.0, 0.5, (2, 4000))
    tau = float(np.quantile(np.r_[llc, llr], 0.8))
    for cap, c_true in ((tau, 3.0), (None, 3.0)):
        z = c_true * (soft_cap(llc, cap) - soft_cap(llr, cap))
        y = rng.random(4000) < 1 / (1 + np.exp(-z))  # Bradley-Terry labels: True when the first text won
        a, b = np.where(y, llc, llr), np.where(y, llr, llc)
        c, t = warm_cap(a, b)
        if cap is None:
            assert t == np.max(np.r_[a, b])  # the top of the grid: no text is capped
        else:
            assert abs(t - tau) < 0.15, (t, tau)
        assert abs(c - c_true) < 0.4, c
