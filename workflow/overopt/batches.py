"""Rows per forward pass of the frozen scoring passes, by device: one place for the jobs that run
them and for `plan`, which sizes GPU memory by them.

On a CPU, chunks whose activations stay in cache: under the tiny world's 96-wide base and its
gold LM, 64 joined texts ran 1.5x faster per row than 256, 128 completions sharing their prompts'
keys/values 1.2x faster than 256 (and 256 1.5x faster than 1,024), and a proxy's scores 1.1-1.2x
faster at 256 completions than at 512, each with the same numbers to the bit
(tests/test_engine.py). On a GPU, wide batches.
"""

from __future__ import annotations

# completion log-likelihoods (`loglik`): joined texts per pass; 2x as many completions of shared prompts
LOGLIK = {"cpu": 64, "cuda": 256}
# reward-model scores of completions sharing their prompts' keys/values (`rm.rewards_by_prompt`)
SCORE = {"cpu": 256, "cuda": 512}


def rows(table: dict) -> int:
    """`table`'s rows for the device the job's models run on (a GPU's for any accelerator)."""
    from .util import device

    return table.get(device().type, table["cuda"])
