"""Supervised fine-tuning of a policy's base before it becomes pi_init (the config's `sft:`).

The paper's and Coste et al.'s initial policies are supervised fine-tuned, not base models. SFT
is next-token training on demonstrations, every weight trained (a LoRA policy adds its adapter in
PPO, on top of the fine-tuned weights): a file of texts, or in the tiny world the corpus's
training text. Demonstrations are read as written, so a chat policy's are written in its chat
template. The result is a model directory and a spec file beside it that keeps the base's own
settings (`template`, `lora`, `quantize`), which every job loading pi_init reads.
"""

from __future__ import annotations

import json
from pathlib import Path


def demonstrations(path: str | None, column: str, heldout: float = 0.05) -> tuple[str, str]:
    """(train, held-out) text: the file's `column`, texts joined by newlines, its last `heldout`
    fraction held out; without a file, the tiny world's corpus split."""
    if path is None:
        from .text import corpus_split

        return corpus_split()
    import pandas as pd

    df = pd.read_json(path, lines=True) if str(path).endswith((".jsonl", ".json")) else pd.read_parquet(path)
    if column not in df:
        raise ValueError(f"{path}: no column {column!r} (sft.demonstrations.column); columns: {', '.join(df.columns)}")
    texts = df[column].astype(str).tolist()
    cut = max(1, int(len(texts) * (1 - heldout)))
    if cut >= len(texts):
        raise ValueError(f"{path}: {len(texts)} demonstrations, too few to hold some out")
    return "\n".join(texts[:cut]), "\n".join(texts[cut:])


def sft(base: str, out: str, spec_out: str, train_text: str, val_text: str, steps: int, batch_size: int, seq_len: int,
        lr: float, seed: int, threads: int) -> dict:
    from .hf import read_spec
    from .models import count_params, encode_corpus, load_causal, load_tokenizer, train_lm
    from .util import atomic_dir, atomic_file, log, seed_everything, write_json

    seed_everything(seed, threads)
    tok = load_tokenizer(base)
    model = load_causal(base)
    train, val = encode_corpus(train_text, tok), encode_corpus(val_text, tok)
    for name, ids in (("training", train), ("held-out", val)):
        if len(ids) < seq_len + 2:
            raise ValueError(f"sft: {len(ids)} {name} tokens of demonstrations, fewer than sft.seq_len + 2 ({seq_len + 2})")
    n = count_params(model)
    metrics = {"params": n, **train_lm(model, train, val, steps, batch_size, seq_len, lr, seed, f"sft[{n} params]"),
               "base": str(base)}
    log.info("sft: held-out %.3f nats/token after %d steps", metrics["val_loss_nats_per_char"], steps)
    with atomic_dir(out) as tmp:
        model.save_pretrained(str(tmp), safe_serialization=True)
        tok.save_pretrained(str(tmp))
        write_json(metrics, Path(tmp) / "metrics.json")
    # the fine-tuned weights under the base's own settings; its tokenizer is saved with them
    spec = {k: v for k, v in read_spec(base).items() if k != "tokenizer"}
    with atomic_file(spec_out) as tmp:
        Path(tmp).write_text(json.dumps({**spec, "hf": str(out), "params": n}, indent=1, sort_keys=True))
    return metrics
