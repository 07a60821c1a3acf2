"""What PPO would gain from running its frozen models in bfloat16, and what it would change.

    python bench/bench_ppo_precision.py --workdir DIR [--steps 40] [--repeats 2]

Reruns the longest PPO job of a finished tiny-world run (README command 1's directory, or
`bench/bench_study.py --workdir`) for `--steps` steps in this process, its outputs sent to a
scratch directory, once per variant and `--repeats` times over, the variants alternating:

- `float32`: the study's engine;
- `proxy`: the proxy's body and its base's log-likelihood readout in bfloat16 (bfloat16 weights,
  float32 score head, unembedding and log-softmax), on rollouts and evaluations;
- `proxy+gold`: also the gold's log-likelihood under its reference LM (evaluations);
- `proxy+gold+init`: also pi_init's log-probabilities, from which the KL is measured.

Each variant is an engine the study does not have; it is built here, from the study's own direct
passes, only to be measured. It prints the CPU, this machine's matmul rates in the same run, the
seconds by phase (rollout sampling, the policy's update forward passes, the proxy on rollouts
and on evaluations, the gold, pi_init, everything else), each variant's total against float32,
and its curve at the first evaluations. The rollouts' rewards feed the updates, so every variant
but float32 is another draw of the run, not a rounding of it; the KL at step 0, where the policy
is pi_init, shows whether a variant measures KL without bias.
"""

import argparse
import collections
import contextlib
import copy
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "workflow"))
sys.path.insert(0, str(ROOT / "bench"))

from bench_floor import job_argv  # noqa: E402
from bench_study import cpu_model, matmul_gflops  # noqa: E402

VARIANTS = ("float32", "proxy", "proxy+gold", "proxy+gold+init")


class Bf16:
    """bfloat16 copies of frozen GPT-2s, made once per model."""

    def __init__(self):
        self.copies = {}

    def __call__(self, model):
        if id(model) not in self.copies:
            self.copies[id(model)] = copy.deepcopy(model).to(torch.bfloat16)
        return self.copies[id(model)]


@torch.inference_mode()
def mean_logprob_bf16(bf16, model, tokenizer, prompts, completions, batch_size=64):
    """`models.completion_logprobs` with the body in bfloat16 and the unembedding in float32."""
    from overopt.models import gpt2_hidden_with_prefix
    from overopt.text import pad_ids, prompt_batches, split_at_prompts

    out = np.zeros(len(prompts))
    groups, rest = split_at_prompts(tokenizer, prompts, completions)
    if len(rest):
        raise ValueError("a completion that does not split at its prompt: not a tiny-world run")
    for p_ids, owner, c_ids, idx in prompt_batches(groups, 2 * batch_size):
        x, mask = pad_ids(c_ids, tokenizer.pad_token_id)
        hp, h = gpt2_hidden_with_prefix(bf16(model), p_ids, x, owner)
        first = hp.expand(len(x), -1) if owner is None or len(hp) == 1 else hp[torch.as_tensor(owner)]
        before = torch.cat([first[:, None], h[:, :-1]], 1).float()
        lp = torch.log_softmax(before @ model.lm_head.weight.T, -1).gather(-1, x[..., None])[..., 0]
        mask = mask.to(lp.dtype)
        out[idx] = ((lp * mask).sum(1) / mask.sum(1)).double().numpy()
    return out


@contextlib.contextmanager
def patched(obj, name, value):
    old = getattr(obj, name)
    setattr(obj, name, value)
    try:
        yield
    finally:
        setattr(obj, name, old)


def timed(seconds, name_of, f):
    def wrapper(*args, **kwargs):
        t = time.perf_counter()
        out = f(*args, **kwargs)
        seconds[name_of(*args, **kwargs)] += time.perf_counter() - t
        return out
    return wrapper


def run(argv, variant, batch_size):
    """One rerun of the job under `variant`: (seconds, seconds by phase, its curve)."""
    from overopt import gold, models, ppo, rm
    from overopt.cli import main as overopt

    seconds, bf16 = collections.Counter(), Bf16()
    with contextlib.ExitStack() as stack:
        if variant != "float32":
            stack.enter_context(patched(rm, "score_texts", lambda m, tok, p, c: rm.rewards_by_prompt(
                m, tok, p, c, dtype=torch.bfloat16)))
            stack.enter_context(patched(rm, "loglik_readout", lambda lm, readout, tok, p, c: 0.0 if lm is None else
                                        readout(mean_logprob_bf16(bf16, lm, tok, p, c))))
        if "gold" in variant:
            stack.enter_context(patched(gold, "completion_logprobs", lambda m, tok, p, c, batch_size=64:
                                        mean_logprob_bf16(bf16, m, tok, p, c, batch_size)))
        masked = ppo.masked_logprobs
        if "init" in variant:
            def masked(model, seq, n_prompt, banned, _f32=ppo.masked_logprobs, **kw):
                if torch.is_grad_enabled() or kw:
                    return _f32(model, seq, n_prompt, banned, **kw)
                h = models.gpt2_hidden(bf16(model), seq[:, :-1])[:, n_prompt - 1:].float()
                logits = h @ model.lm_head.weight.T
                if banned:
                    logits[..., banned] = -float("inf")
                return torch.log_softmax(logits, -1).gather(-1, seq[:, n_prompt:, None])[..., 0]
        stack.enter_context(patched(ppo, "masked_logprobs", timed(
            seconds, lambda *a, **k: "update forward" if torch.is_grad_enabled() else "pi_init", masked)))
        stack.enter_context(patched(models, "sample", timed(
            seconds, lambda m, x, *a, **k: "sampling", models.sample)))
        reward, gold_fn = ppo.proxy_reward_fn, ppo.gold_score_fn
        stack.enter_context(patched(ppo, "proxy_reward_fn", lambda *a: timed(
            seconds, lambda p, c: "proxy, rollouts" if len(p) == batch_size else "proxy, evaluations", reward(*a))))
        stack.enter_context(patched(ppo, "gold_score_fn", lambda *a: timed(
            seconds, lambda p, c: "gold", gold_fn(*a))))
        t = time.perf_counter()
        overopt(argv)
        total = time.perf_counter() - t
    seconds["everything else"] = total - sum(seconds.values())
    return total, seconds, pd.read_csv(argv[argv.index("--out") + 1])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--workdir", required=True, help="a finished tiny-world run of the workflow")
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    a = ap.parse_args()
    from overopt.jobtimes import read_jobs

    work = Path(a.workdir).resolve()
    job = max((j for j in read_jobs(work) if j.rule == "ppo"), key=lambda j: j.seconds)
    f32, b16 = matmul_gflops(), matmul_gflops(dtype=torch.bfloat16)
    print(f"run: {work}\njob: {job.outputs[0]} ({job.seconds:.1f} s in the run)\n"
          f"CPU: {cpu_model()}; matmul (1 thread, 512^3): float32 {f32:.1f}, bfloat16 {b16:.1f} GFLOP/s")
    os.chdir(work)  # a job's paths are relative to the run's directory
    results = collections.defaultdict(list)
    with tempfile.TemporaryDirectory(prefix="overopt-ppo-precision-") as tmp:
        argv = job_argv(job.command, Path(tmp))
        i = argv.index("--settings")
        settings = json.loads(argv[i + 1])
        settings["steps"] = a.steps
        argv[i + 1] = json.dumps(settings)
        for r in range(a.repeats):
            for v in a.variants:
                results[v].append(run(argv, v, settings["batch_size"]))
                print(f"  {v}, repeat {r + 1}: {results[v][-1][0]:.2f} s", flush=True)
    base = np.mean([t for t, _, _ in results["float32"]]) if "float32" in results else None
    phases = list(dict.fromkeys(k for rs in results.values() for _, s, _ in rs for k in s))
    print(f"\nseconds for {a.steps} steps, mean of {a.repeats}:")
    print(f"{'phase':<22}" + "".join(f"{v:>17}" for v in results))
    for p in phases:
        print(f"{p:<22}" + "".join(f"{np.mean([s[p] for _, s, _ in rs]):>17.2f}" for rs in results.values()))
    total = {v: np.mean([t for t, _, _ in rs]) for v, rs in results.items()}
    print(f"{'total':<22}" + "".join(f"{t:>17.2f}" for t in total.values()))
    if base:
        print(f"{'against float32':<22}" + "".join(f"{t / base:>16.2f}x" for t in total.values()))
    print("\ncurve of the first repeat (step: KL, gold, proxy):")
    for v, rs in results.items():
        curve = rs[0][2].head(5)
        print(f"  {v:<17}" + "; ".join(f"{s:.0f}: {k:.4f}, {g:.4f}, {q:.4f}" for s, k, g, q in
                                       curve[["step", "kl", "gold", "proxy"]].itertuples(index=False)))
    print(f"float32 matmul after: {matmul_gflops():.1f} GFLOP/s")


if __name__ == "__main__":
    main()
