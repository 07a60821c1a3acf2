import itertools
import json

import numpy as np
import pandas as pd
import pytest
import torch

from conftest import count_e, killed_after

from overopt.text import build_char_tokenizer, corpus_split
from overopt.models import banned_token_ids, pretrain, tiny_config
from overopt.ppo import PPOConfig, clipped_policy_loss, gae, masked_logprobs, rollout_kl, run_ppo, sampled_kl


def test_gae_matches_hand_computed_values():
    r = torch.tensor([[0.0, 0.0, 1.0]])
    v = torch.tensor([[0.5, 0.2, 0.4]])
    gamma, lam = 1.0, 0.5
    d2 = 1.0 - 0.4
    d1 = 0.0 + 0.4 - 0.2
    d0 = 0.0 + 0.2 - 0.5
    a2, a1 = d2, d1 + lam * d2
    a0 = d0 + lam * a1
    adv, ret = gae(r, v, gamma, lam)
    assert adv[0].tolist() == pytest.approx([a0, a1, a2])
    assert ret[0].tolist() == pytest.approx([a0 + 0.5, a1 + 0.2, a2 + 0.4])
    adv1, _ = gae(r, v, 1.0, 1.0)  # lambda = 1: Monte-Carlo return minus value
    assert adv1[0].tolist() == pytest.approx([0.5, 0.8, 0.6])


def test_clipped_objective_matches_hand_computed_values():
    old = torch.zeros(4)
    logp = torch.log(torch.tensor([1.5, 0.5, 1.1, 0.7]))
    adv = torch.tensor([1.0, 1.0, -1.0, -1.0])
    # ratio 1.5, A>0: min(1.5, 1.2) = 1.2 ; ratio 0.5, A>0: min(0.5, 0.8) = 0.5
    # ratio 1.1, A<0: min(-1.1, -1.1) = -1.1 ; ratio 0.7, A<0: min(-0.7, -0.8) = -0.8
    want = -np.mean([1.2, 0.5, -1.1, -0.8])
    assert clipped_policy_loss(logp, old, adv, 0.2).item() == pytest.approx(want)


def _tiny_lm(vocab_chars="ab", seed=0):
    from transformers import GPT2LMHeadModel

    tok = build_char_tokenizer(vocab_chars)
    torch.manual_seed(seed)
    m = GPT2LMHeadModel(tiny_config({"n_layer": 1, "n_embd": 8, "n_head": 2, "n_positions": 16}, tok)).eval()
    return m, tok


def test_kl_estimate_equals_exact_enumeration():
    pi, tok = _tiny_lm(seed=1)
    ref, _ = _tiny_lm(seed=2)
    banned = banned_token_ids(tok)
    allowed = [i for i in range(len(tok)) if i not in banned]  # 2 symbols
    prompt = torch.tensor([[allowed[0]]])
    T = 3

    def dist(model, prefix):
        logits = model(input_ids=torch.tensor([prefix])).logits[0, -1].clone()
        logits[banned] = -float("inf")
        return torch.softmax(logits, -1)

    # exact KL(pi || ref) by the chain rule over the tree of completions
    def exact(prefix, depth):
        if depth == T:
            return 0.0
        p, q = dist(pi, prefix), dist(ref, prefix)
        return sum(float(p[a]) * (float(torch.log(p[a] / q[a])) + exact(prefix + [a], depth + 1)) for a in allowed)

    with torch.no_grad():
        kl_exact = exact(prompt[0].tolist(), 0)
        seqs = torch.tensor([[allowed[0], *ys] for ys in itertools.product(allowed, repeat=T)])
        lp = masked_logprobs(pi, seqs, 1, banned)
        lr = masked_logprobs(ref, seqs, 1, banned)
        probs = lp.sum(-1).exp()
        assert probs.sum().item() == pytest.approx(1.0, abs=1e-5)
        # the expectation of our per-sequence estimator under pi is the exact KL
        assert (probs * sampled_kl(lp, lr)).sum().item() == pytest.approx(kl_exact, abs=1e-5)
    assert kl_exact > 0


def test_rollout_kl_equals_exact_enumeration_and_is_never_negative():
    """The trust-region term: under the rollout policy's own samples its mean is KL(pi_old || pi)."""
    old, tok = _tiny_lm(seed=3)
    new, _ = _tiny_lm(seed=4)
    banned = banned_token_ids(tok)
    allowed = [i for i in range(len(tok)) if i not in banned]
    T = 3
    with torch.no_grad():
        seqs = torch.tensor([[allowed[0], *ys] for ys in itertools.product(allowed, repeat=T)])
        lo, ln = masked_logprobs(old, seqs, 1, banned), masked_logprobs(new, seqs, 1, banned)
        p_old = lo.sum(-1).exp()
        est = rollout_kl(ln, lo)
        # sequence-level KL(old || new) by enumeration; the token-level sum has the same expectation
        exact = (p_old * (lo.sum(-1) - ln.sum(-1))).sum().item()
        assert (p_old * est).sum().item() == pytest.approx(exact, abs=1e-5)
        assert exact > 0 and bool((est >= 0).all())
        assert rollout_kl(lo, lo).abs().max().item() == 0.0


def _run(d, prompts, out, kl_penalty=0.0, steps=30, ckpt="ckpt", inputs=()):
    cfg = PPOConfig(steps=steps, batch_size=32, minibatch_size=16, epochs=2, lr=3e-3, kl_penalty=kl_penalty,
                    eval_every=10, eval_prompts=8, eval_samples=4, checkpoint_every=10, seed=0)
    return run_ppo(str(d / "policy"), count_e, count_e, str(d / out), str(d / ckpt), prompts, prompts[:8], 8,
                   cfg, threads=1, inputs=inputs)


def test_ppo_raises_a_toy_reward_and_a_large_kl_penalty_holds_it_near_pi_init(tiny_policy):
    d, prompts = tiny_policy
    free = _run(d, prompts, "free.csv")
    assert free["proxy"].iloc[-1] > free["proxy"].iloc[0] + 1.0  # more "e"s per 8 characters
    assert free["kl"].iloc[-1] > 0.5
    held = _run(d, prompts, "held.csv", kl_penalty=5.0, ckpt="ckpt2")
    assert held["kl"].iloc[-1] < 0.25 * free["kl"].iloc[-1]
    assert list(free.columns) == ["step", "kl", "d", "gold", "gold_se", "proxy", "proxy_se"]


def test_killed_run_resumes_to_the_same_csv(tiny_policy, resumed_from):
    d, prompts = tiny_policy
    whole = _run(d, prompts, "whole.csv", steps=20, ckpt="c_whole")
    with pytest.raises(KeyboardInterrupt), killed_after(10):
        _run(d, prompts, "part.csv", steps=20, ckpt="c_part")
    assert not (d / "part.csv").exists() and (d / "c_part" / "meta.json").exists()
    resumed = _run(d, prompts, "part.csv", steps=20, ckpt="c_part")
    assert resumed_from == [10]  # a run that started over would give the same CSV too
    pd.testing.assert_frame_equal(whole, resumed)
    assert pd.read_csv(d / "part.csv").equals(pd.read_csv(d / "whole.csv"))
    assert not (d / "c_part").exists()  # checkpoints are cleaned up after the final write


@pytest.mark.parametrize("change", ["proxy", "setting"])
def test_a_checkpoint_of_other_inputs_is_not_resumed(tiny_policy, tmp_path, resumed_from, change):
    """A run killed, then its proxy retrained (or a setting changed) before the rerun: the rerun
    starts over and ends as a fresh run of the new inputs, not as a blend of old and new."""
    d, prompts = tiny_policy
    proxy = tmp_path / "proxy.bin"
    proxy.write_bytes(b"old proxy")
    with pytest.raises(KeyboardInterrupt), killed_after(10):
        _run(d, prompts, "x.csv", steps=20, ckpt="c_other", inputs=(proxy,))
    step10 = json.loads((d / "c_other" / "meta.json").read_text())
    assert step10["step"] == 10
    if change == "proxy":
        proxy.write_bytes(b"new proxy, retrained")
    kl = 0.5 if change == "setting" else 0.0
    rerun = _run(d, prompts, "x.csv", steps=20, ckpt="c_other", kl_penalty=kl, inputs=(proxy,))
    assert resumed_from == []
    fresh = _run(d, prompts, "fresh.csv", steps=20, ckpt="c_fresh", kl_penalty=kl, inputs=(proxy,))
    pd.testing.assert_frame_equal(rerun, fresh)
    # (the same inputs do resume: test_killed_run_resumes_to_the_same_csv)


def _short_run(d, prompts, name, **settings):
    """Ten PPO steps of the toy reward with `settings` on top of a small fixed configuration."""
    cfg = PPOConfig(**{**dict(steps=10, batch_size=32, minibatch_size=16, epochs=2, lr=3e-3, eval_every=5,
                              eval_prompts=8, eval_samples=4, checkpoint_every=100, seed=0), **settings})
    return run_ppo(str(d / "policy"), count_e, count_e, str(d / f"{name}.csv"), str(d / f"c_{name}"),
                   prompts, prompts[:8], 8, cfg, threads=1)


def test_value_lr_zero_means_the_policy_lr_and_a_larger_one_changes_the_run(tiny_policy):
    d, prompts = tiny_policy
    default, same = _short_run(d, prompts, "v0", value_lr=0.0), _short_run(d, prompts, "v_same", value_lr=3e-3)
    pd.testing.assert_frame_equal(default, same)  # 0 is the policy's lr, exactly
    faster = _short_run(d, prompts, "v_fast", value_lr=0.3)  # the value head moves, so do the advantages and the policy
    assert not np.allclose(faster["kl"].to_numpy()[1:], default["kl"].to_numpy()[1:])


def test_a_trust_region_slows_each_update(tiny_policy):
    """With a large trust_kl the policy moves less per update, so the run ends nearer pi_init."""
    d, prompts = tiny_policy
    free = _short_run(d, prompts, "t0", epochs=4, eval_every=10)
    held = _short_run(d, prompts, "t20", epochs=4, eval_every=10, trust_kl=20.0)
    assert free["kl"].iloc[-1] > 0.2
    assert held["kl"].iloc[-1] < 0.5 * free["kl"].iloc[-1]


def test_each_evaluation_is_written_per_prompt_in_the_prompts_order(tiny_policy):
    """The per-prompt table holds, for every evaluation and prompt, the mean over that prompt's
    own samples: a gold that depends on the prompt alone comes back exactly per prompt."""
    d, prompts = tiny_policy
    by_prompt_gold = lambda ps, comps: np.array([float(len(p) + ord(p[0])) for p in ps])
    cfg = PPOConfig(steps=4, batch_size=16, minibatch_size=8, epochs=1, lr=3e-3, eval_every=2, eval_prompts=6,
                    eval_samples=3, checkpoint_every=100, seed=0)
    curve = run_ppo(str(d / "policy"), count_e, by_prompt_gold, str(d / "bp.csv"), str(d / "c_bp"), prompts,
                    prompts[:6], 8, cfg, threads=1, by_prompt_out=str(d / "bp.by_prompt.csv"))
    per = pd.read_csv(d / "bp.by_prompt.csv")
    assert sorted(per["step"].unique()) == curve["step"].tolist() == [0, 2, 4]
    want = [len(p) + ord(p[0]) for p in prompts[:6]]
    for step, g in per.groupby("step"):
        assert g["prompt"].tolist() == list(range(6)) and g["gold"].tolist() == want
        assert g["proxy"].mean() == pytest.approx(curve.loc[curve["step"] == step, "proxy"].item())
