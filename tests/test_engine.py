"""The engine's fast paths against the Hugging Face forward pass (`OVEROPT_ENGINE=hf`), on small
cases of each kind of number the study produces: a proxy, its pool scores, a PPO curve.

Float rounding differs between the two (another order of the same sums), so they are compared
within stated tolerances: 1e-5 relative for a proxy's metrics, 1e-5 absolute for its pool scores
(scores of s.d. about 0.1), 1e-4 absolute for a PPO curve of 12 steps (its samples, drawn from the same seeds, coincide to the token)."""

import platform

import numpy as np
import pandas as pd
import pytest

from conftest import count_e, labelled_pairs, tiny_base, tiny_lm_and_rm


def _both(monkeypatch, fn):
    fast = fn("fast")
    monkeypatch.setenv("OVEROPT_ENGINE", "hf")
    slow = fn("hf")
    monkeypatch.delenv("OVEROPT_ENGINE")
    return fast, slow


def test_a_proxy_and_its_pool_scores_equal_the_hf_paths(tmp_path, monkeypatch):
    from overopt.pool import score_proxy
    from overopt.rm import train_rm

    base, _ = tiny_base(tmp_path, seed=0)
    df = labelled_pairs(tmp_path)
    kw = dict(policy="p", rm="r", comparisons=str(tmp_path / "cmp.parquet"), data_size=400, seed=0, epochs=1, batch_size=16, lr=1e-3,
              threads=1, base_loglik=True, readout_cap=True)
    fast, slow = _both(monkeypatch, lambda name: train_rm(str(base), out=str(tmp_path / name), **kw))
    for k in ("val_loss", "val_acc", "base_loglik_weight", "base_loglik_cap"):
        assert fast[k] == pytest.approx(slow[k], rel=1e-5, abs=1e-6), k

    pool = pd.DataFrame({"prompt_id": np.repeat(np.arange(4), 12), "sample_id": np.tile(np.arange(12), 4),
                         "prompt": np.repeat(df["prompt"].to_numpy()[:4], 12), "completion": df["completion_b"].to_numpy()[:48]})
    pool.to_parquet(tmp_path / "pool.parquet")
    pool[["prompt_id", "sample_id"]].assign(gold=0.0).to_parquet(tmp_path / "gold.parquet")
    fast, slow = _both(monkeypatch, lambda name: score_proxy(
        str(tmp_path / "pool.parquet"), str(tmp_path / "gold.parquet"), str(tmp_path / "fast"),
        str(tmp_path / f"{name}.parquet"), threads=1, dtype="float32"))
    fast, slow = (pd.read_parquet(tmp_path / f"{n}.parquet")["proxy"].to_numpy() for n in ("fast", "hf"))
    np.testing.assert_allclose(fast, slow, rtol=0, atol=1e-5)
    assert np.ptp(fast) > 0


def test_a_ppo_curve_equals_the_hf_path(tiny_policy, monkeypatch):
    from overopt.ppo import PPOConfig, run_ppo

    d, prompts = tiny_policy
    cfg = PPOConfig(steps=12, batch_size=16, minibatch_size=8, epochs=2, lr=3e-3, trust_kl=1.0, eval_every=4,
                    eval_prompts=4, eval_samples=4, checkpoint_every=100, seed=0)
    fast, slow = _both(monkeypatch, lambda name: run_ppo(
        str(d / "policy"), count_e, count_e, str(d / f"{name}.csv"), str(d / f"ck_{name}"), prompts, prompts[:4], 8, cfg))
    for k in ("kl", "gold", "proxy"):
        np.testing.assert_allclose(fast[k].to_numpy(), slow[k].to_numpy(), rtol=0, atol=1e-4, err_msg=k)
    assert fast["kl"].iloc[-1] > 0.05 and fast["proxy"].iloc[-1] != fast["proxy"].iloc[0]


def test_the_cpu_chunk_sizes_leave_the_numbers_unchanged():
    """`batches`: the CPU's cache-sized chunks give the numbers the larger ones gave, to 1e-6
    (the tiny world's bases agreed to the bit on 8,192 pool rows and 4,096 pairs)."""
    from overopt import batches, models
    from overopt.rm import rewards_by_prompt

    tok, lm, rm = tiny_lm_and_rm(96)
    rng = np.random.default_rng(0)
    heads = ["".join(rng.choice(list("abcdefgh ,."), 16)) for _ in range(3)]
    many = [h for h in heads for _ in range(700)]  # a pool: many completions per prompt
    few = ["".join(rng.choice(list("abcdefgh ,."), 16)) for _ in range(300)]  # pairs: one per prompt
    comps = lambda ps: ["".join(rng.choice(list("abcdefgh ,.e"), rng.integers(12, 17))) for _ in ps]  # noqa: E731
    cpu, gpu = batches.LOGLIK["cpu"], batches.LOGLIK["cuda"]
    assert cpu < gpu
    for prompts in (many, few):
        c = comps(prompts)
        small = models.completion_logprobs(lm, tok, prompts, c, batch_size=cpu)
        np.testing.assert_allclose(small, models.completion_logprobs(lm, tok, prompts, c, batch_size=gpu), rtol=0, atol=1e-6)
        assert np.ptp(small) > 0
    c = comps(many)
    small = rewards_by_prompt(rm, tok, many, c, batch_size=batches.SCORE["cpu"])
    np.testing.assert_allclose(small, rewards_by_prompt(rm, tok, many, c, batch_size=batches.SCORE["cuda"]), rtol=0, atol=1e-6)
    assert np.ptp(small) > 0


_FAULTS = """
import hashlib, resource, sys
import torch
from overopt.util import keep_freed_memory
if sys.argv[1] == "keep":
    assert keep_freed_memory()
torch.manual_seed(0)
w = torch.randn(512, 512, requires_grad=True)

def step():
    # a training step's pattern: activations of a few MB made, read and freed in turn
    xs = [torch.randn(2016, 512) for _ in range(4)]
    loss = sum(torch.nn.functional.gelu(x @ w).square().mean() for x in xs)
    loss.backward()
    return loss.item()

step()
r0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
losses = [step() for _ in range(20)]
faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - r0
print(faults, hashlib.sha256(w.grad.numpy().tobytes() + repr(losses).encode()).hexdigest())
"""


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc's malloc only")
def test_freed_memory_is_kept_for_the_next_tensors_with_the_same_numbers():
    import os
    import subprocess
    import sys

    def run(mode):
        out = subprocess.run([sys.executable, "-c", _FAULTS, mode], capture_output=True, text=True, check=True,
                             env={**os.environ, "OMP_NUM_THREADS": "1"}).stdout.split()
        return int(out[0]), out[1]

    (plain, plain_bits), (kept, kept_bits) = run("plain"), run("keep")
    assert kept_bits == plain_bits
    # glibc's defaults return the freed blocks and page-fault them in again at every step
    assert kept * 3 < plain, (kept, plain)
