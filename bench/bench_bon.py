"""Best-of-n throughput, in one run: pool sampling vs the same model's forward-pass FLOP/s.

    python bench/bench_bon.py [--n-embd 64 --n-layer 2 --batch 1024]

Prints sampling tokens/s (the pool's sampler: the direct GPT-2 decoder over a preallocated KV
cache; the generic cached `model(...)` loop it replaces; HF `generate`), the model's
full-sequence forward FLOP/s and a plain matmul FLOP/s measured on this machine, their ratios,
and the estimator's time for N = 4096 samples x 1,000 prompts. Sampling FLOP/s count the weight
matmuls of every position the sampler runs through the model (the prompt once, then each new
token but the last), the same count as the forward pass's. Numbers, not pass/fail: the machine
is shared, so compare ratios taken in one run.
"""

import argparse
import os
import time

import numpy as np
import torch

from overopt.estimator import bon_curve
from overopt.text import build_char_tokenizer, corpus_split
from overopt.models import banned_token_ids, sample, tiny_config


def best_of(fn, repeat=3):
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--n-embd", type=int, default=64)
    ap.add_argument("--n-layer", type=int, default=2)
    ap.add_argument("--n-head", type=int, default=4)
    ap.add_argument("--batch", type=int, default=1024)
    ap.add_argument("--prompt", type=int, default=32)
    ap.add_argument("--new", type=int, default=32)
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    from transformers import GPT2LMHeadModel

    train, held = corpus_split()
    tok = build_char_tokenizer(train + held)
    model = GPT2LMHeadModel(tiny_config({"n_layer": a.n_layer, "n_embd": a.n_embd, "n_head": a.n_head}, tok)).eval()
    V, d, L = model.config.vocab_size, a.n_embd, a.n_layer
    x = torch.randint(4, V, (a.batch, a.prompt))
    g = torch.Generator().manual_seed(0)
    banned = banned_token_ids(tok)

    # matmul FLOPs per token: 12 d^2 per layer (qkv, proj, 2 MLP) + the LM head, x2 for multiply-add
    per_tok = 2 * (12 * d * d * L + d * V)
    positions = a.batch * (a.prompt + a.new - 1)  # what one sampling call runs through the model
    t_ours = best_of(lambda: sample(model, x, a.new, banned=banned, generator=g))
    os.environ["OVEROPT_ENGINE"] = "hf"  # the generic cached loop
    t_loop = best_of(lambda: sample(model, x, a.new, banned=banned, generator=g))
    del os.environ["OVEROPT_ENGINE"]
    with torch.no_grad():
        t_gen = best_of(lambda: model.generate(x, attention_mask=torch.ones_like(x), max_new_tokens=a.new,
                                               min_new_tokens=a.new, do_sample=True, top_k=0, pad_token_id=0), 1)

    seq = torch.randint(4, V, (a.batch, a.prompt + a.new))
    with torch.no_grad():
        t_fwd = best_of(lambda: model(input_ids=seq))
    fwd_flops = per_tok * seq.numel() / t_fwd

    A = torch.randn(a.batch * 8, d)
    B = torch.randn(d, 4 * d)
    t_mm = best_of(lambda: [A @ B for _ in range(20)])
    mm_flops = 20 * 2 * A.shape[0] * d * 4 * d / t_mm

    P, N = 1000, 4096
    rng = np.random.default_rng(0)
    proxy = rng.normal(size=(P, N))
    gold = proxy + rng.normal(size=(P, N))
    t_est = best_of(lambda: bon_curve(proxy, gold), 2)

    params = sum(p.numel() for p in model.parameters())
    print(f"model: {params} params (n_embd={d}, n_layer={L}, vocab={V}), batch {a.batch}, "
          f"{a.prompt}+{a.new} tokens, {a.threads} threads")
    new = a.batch * a.new
    for label, t in (("sampling, direct decoder (ours)", t_ours), ("sampling, generic cached loop ", t_loop),
                     ("sampling, HF generate          ", t_gen)):
        print(f"{label}: {new / t:12,.0f} new tokens/s = {positions * per_tok / t / 1e9:7.2f} GFLOP/s")
    print(f"forward pass, full sequence    : {fwd_flops / per_tok:12,.0f} tokens/s     = {fwd_flops / 1e9:7.2f} GFLOP/s")
    print(f"plain matmul {A.shape[0]}x{d} @ {d}x{4 * d}   : {mm_flops / 1e9:7.2f} GFLOP/s")
    print(f"ratio ours / forward pass      : {positions * per_tok / t_ours / fwd_flops:.2f}")
    print(f"ratio ours / plain matmul      : {positions * per_tok / t_ours / mm_flops:.2f}")
    print(f"speed-up ours / generic loop   : {t_loop / t_ours:.2f}")
    print(f"speed-up ours / HF generate    : {t_gen / t_ours:.2f}")
    print(f"estimator, N={N} x {P} prompts, all n on a log grid: {t_est:.2f} s")


if __name__ == "__main__":
    main()
