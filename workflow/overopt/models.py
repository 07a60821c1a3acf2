"""Models are Hugging Face model directories: built here from a `tiny:` spec, or given by `hf:`.

Everything downstream loads a directory with `AutoModelForCausalLM` (policies, LM bases) or
`AutoModelForSequenceClassification` with `num_labels=1` (reward models) plus `AutoTokenizer`,
so the tiny world and real scale share one code path.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from . import plain
from .plain import GELU, GPT2, direct_config
from .util import Progress, atomic_dir, autocast, generator, log, seed_everything, write_json


def count_params(model: torch.nn.Module) -> int:
    """Parameters of the transformer body and head, counting tied weights once."""
    return sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())


def tiny_config(spec: dict, tokenizer):
    from transformers import GPT2Config

    return GPT2Config(
        vocab_size=len(tokenizer),
        n_positions=int(spec.get("n_positions", 128)),
        n_embd=int(spec["n_embd"]),
        n_layer=int(spec["n_layer"]),
        n_head=int(spec["n_head"]),
        n_inner=4 * int(spec["n_embd"]),
        # the fused tanh-GELU: same function as GPT-2's gelu_new, one kernel instead of five
        activation_function="gelu_pytorch_tanh",
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=True,
    )


def load_tokenizer(path: str | Path):
    """The tokenizer of a model ref (a directory, or an `hf:` spec file with its own `tokenizer:`)."""
    from .hf import tokenizer_source

    if plain.tokenizer_loadable(tokenizer_source(path)):
        return plain.Tokenizer(tokenizer_source(path))
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tokenizer_source(path))
    if tok.pad_token_id is None:  # most causal-LM tokenizers ship without one
        tok.pad_token = tok.eos_token
    # Right padding everywhere: reward models read the last non-pad token, and a padded batch
    # must score each text as it scores alone (left padding shifts absolute positions, and with
    # a reused prompt cache it would put pads between prompt and completion). Sampling never pads.
    tok.padding_side = "right"
    return tok


def load_causal(path: str | Path, dtype=torch.float32, frozen: bool = False):
    """A causal LM from a ref; `frozen` uses honour the spec's `quantize:`."""
    if dtype == torch.float32 and plain.loadable(path):
        return plain.load(path, "lm")
    from transformers import AutoModelForCausalLM

    from .hf import from_pretrained_kwargs, read_spec, to_device

    spec = read_spec(path)
    return to_device(AutoModelForCausalLM.from_pretrained(spec["hf"], **from_pretrained_kwargs(spec, frozen, dtype)))


def load_reward(path: str | Path, dtype=torch.float32, pad_token_id: int | None = None, frozen: bool = False):
    """A scalar reward model; from an LM base this adds a freshly initialised scalar head.

    A LoRA proxy's directory holds only its adapter and head: its frozen base is loaded from
    the spec it recorded, and the adapter put back on top.
    """
    if dtype == torch.float32 and plain.loadable(path):
        return plain.load(path, "reward", pad_token_id)
    from transformers import AutoModelForSequenceClassification

    from .hf import ADAPTER_BASE, from_pretrained_kwargs, is_adapter_dir, read_spec, to_device

    kw = {} if pad_token_id is None else {"pad_token_id": pad_token_id}
    if is_adapter_dir(path):
        from peft import PeftModel

        base = load_reward(Path(path) / ADAPTER_BASE, dtype, pad_token_id)
        return to_device(PeftModel.from_pretrained(base, str(path)))
    spec = read_spec(path)
    return to_device(AutoModelForSequenceClassification.from_pretrained(
        spec["hf"], num_labels=1, **from_pretrained_kwargs(spec, frozen, dtype), **kw
    ))


def encode_corpus(text: str, tokenizer) -> torch.Tensor:
    from .text import encode_texts

    return torch.tensor(encode_texts(tokenizer, [text])[0], dtype=torch.long)


def next_token_loss(model, x: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy of each token given those before it (what `model(x, labels=x).loss` is)."""
    logits = lm_logits(model, x[:, :-1])
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), x[:, 1:].reshape(-1))


@torch.no_grad()
def lm_loss(model, data: torch.Tensor, seq_len: int, n_windows: int, seed: int = 0) -> float:
    """Mean next-token loss (nats/token) over fixed random windows of `data`."""
    g = torch.Generator().manual_seed(seed)
    starts = torch.randint(0, len(data) - seq_len - 1, (n_windows,), generator=g)
    x = torch.stack([data[s : s + seq_len] for s in starts])
    model.eval()
    total = 0.0
    for chunk in x.split(64):
        total += next_token_loss(model, chunk).item() * len(chunk)
    return total / len(x)


def train_lm(model, train: torch.Tensor, val: torch.Tensor, steps: int, batch_size: int, seq_len: int, lr: float,
             seed: int, name: str) -> dict:
    """Next-token training on random windows of `train` (pretraining, SFT); held-out loss on `val`."""
    from .optim import Adam, lambda_schedule

    opt = Adam(model.parameters(), lr=lr, weight_decay=0.01, betas=(0.9, 0.95))
    warmup = max(1, steps // 20)
    # linear warm-up then cosine decay to 10%: standard for short LM runs
    sched = lambda_schedule(
        opt,
        lambda s: min(1.0, (s + 1) / warmup) * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(s, steps) / steps))),
    )
    g = torch.Generator().manual_seed(seed)
    prog = Progress(name, steps)
    model.train()
    for step in range(1, steps + 1):
        starts = torch.randint(0, len(train) - seq_len - 1, (batch_size,), generator=g)
        x = torch.stack([train[s : s + seq_len] for s in starts]).to(model.device)
        with autocast():
            loss = next_token_loss(model, x)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched()
        prog(step, loss=loss.item())
    return {"val_loss_nats_per_char": lm_loss(model, val.to(model.device), seq_len, 256), "steps": steps,
            "tokens_seen": steps * batch_size * seq_len, "seconds": prog.elapsed}


def pretrain(
    spec: dict,
    train_text: str,
    val_text: str,
    tokenizer_dir: str,
    out: str,
    steps: int,
    batch_size: int,
    seq_len: int,
    lr: float,
    seed: int,
    threads: int,
) -> dict:
    """Pretrain a tiny GPT-2 on the corpus by next-character prediction and save it."""
    from transformers import GPT2LMHeadModel

    seed_everything(seed, threads)
    tok = load_tokenizer(tokenizer_dir)
    model = GPT2LMHeadModel(tiny_config(spec, tok))
    n_params = count_params(model)
    metrics = {"params": n_params, **train_lm(model, encode_corpus(train_text, tok), encode_corpus(val_text, tok), steps,
                                              batch_size, seq_len, lr, seed, f"pretrain[{n_params} params]"),
               "spec": spec}
    val_loss = metrics["val_loss_nats_per_char"]
    log.info("pretrained %d params: held-out %.3f nats/char in %.0fs", n_params, val_loss, metrics["seconds"])
    with atomic_dir(out) as tmp:
        model.save_pretrained(str(tmp), safe_serialization=True)
        tok.save_pretrained(str(tmp))
        write_json(metrics, Path(tmp) / "metrics.json")
    return metrics


# --------------------------------------------------------------------------- sampling


def banned_token_ids(tokenizer) -> list[int]:
    """Special tokens are never sampled: completions are plain text of a fixed length."""
    return sorted({i for i in tokenizer.all_special_ids if i is not None})


# A reward model scoring many completions of one prompt runs the prompt once and reuses its
# keys/values (`gpt2_hidden_with_prefix`) when each prompt has at least this many on average.
PROMPT_REUSE_MIN = 8
# Log-likelihoods reuse prompts from two completions each on: a comparison pair's prompt runs
# once for both completions. A pass takes 2 x the batch size of completions: under the gold LM,
# 4,096 pairs took 6.3 s at 128 rows, 7.3 s at 256 and 8.4 s as joined texts, 8,192 pool rows
# 4.0 s at 128 and 4.8 s at 256, each row's number the same at any size (measured).
LOGLIK_REUSE_MIN = 2
# The sampler's prompt block runs each distinct prompt once, over at least this many rows x
# tokens: from 264 up, every row's keys, values and logits had the bits of the full batch's
# (each tiny-world LM; fewer rows take other matmul kernels), and from 1,024 with margin.
PREFILL_MIN_TOKENS = 1024

# GPT-2 settings the direct forward passes below implement; any other model, or a GPT-2 with other
# attention variants, goes through the Hugging Face forward pass.
_DIRECT = ("GPT2LMHeadModel", "GPT2ForSequenceClassification")


def direct_gpt2(model) -> bool:
    """Whether `model` is a float32 GPT-2 that the direct forward passes below compute exactly.

    At the tiny world's sizes the Hugging Face forward pass spends as long building masks and
    dispatching modules as in its matmuls; the direct passes are the matmuls (same weights, same
    numbers to float rounding: tests/test_models.py). Dropout is honoured only by the HF pass, so a
    model in training mode qualifies only when its dropout is zero (the tiny world's is).
    `OVEROPT_ENGINE=hf` sends every model through the HF pass (to compare the two). A `plain.GPT2`
    has no other pass."""
    if os.environ.get("OVEROPT_ENGINE") == "hf":
        return False
    if isinstance(model, GPT2):
        return model.transformer.wte.weight.dtype == torch.float32 and not torch.is_autocast_enabled(model.device.type)
    import transformers

    c = model.config
    return (any(type(model) is getattr(transformers, cls) for cls in _DIRECT) and direct_config(c)
            and (not model.training or c.resid_pdrop == c.embd_pdrop == c.attn_pdrop == 0)
            and all(p.dtype == torch.float32 for p in model.parameters())
            and not torch.is_autocast_enabled(model.device.type))


# ---------------------------------------------------------------------- thread-invariant gradients
# Training gives the same numbers on any thread count. Of the ops of the direct passes, torch's CPU
# kernels give the same bits on 1 and 2 threads (matmuls, attention, elementwise ops, each row's
# layer norm; measured, docs/engine.md) but for two gradients that sum rows in per-thread blocks:
# a layer norm's weight and bias, and a gather's scatter-add (embeddings, shared prompt keys).
# Those two sums run on one thread, and the rest of the job on every thread it is given
# (tests/test_threads.py checks pretraining, a proxy's training and PPO to the bit).


@contextlib.contextmanager
def _one_thread():
    n = torch.get_num_threads()
    if n == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)


def _threaded_grad(*tensors) -> bool:
    return (torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)
            and tensors[0].device.type == "cpu" and torch.get_num_threads() > 1)


class _LayerNorm(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, shape, w, b, eps):
        y, mean, rstd = torch.native_layer_norm(x, shape, w, b, eps)
        ctx.save_for_backward(x, w, b, mean, rstd)
        ctx.shape = shape
        return y

    @staticmethod
    def backward(ctx, dy):
        x, w, b, mean, rstd = ctx.saved_tensors
        need_x, _, need_w, need_b, _ = ctx.needs_input_grad
        bwd = torch.ops.aten.native_layer_norm_backward
        dx = bwd(dy, x, ctx.shape, mean, rstd, w, b, [True, False, False])[0] if need_x else None
        dw = db = None
        if need_w or need_b:
            with _one_thread():  # the row sums
                _, dw, db = bwd(dy, x, ctx.shape, mean, rstd, w, b, [False, need_w, need_b])
        return dx, None, dw, db, None


def _layer_norm(x, shape, w, b, eps):
    if _threaded_grad(x, w, b):
        return _LayerNorm.apply(x, tuple(shape), w, b, eps)
    return F.layer_norm(x, shape, w, b, eps)


class _Take(torch.autograd.Function):
    @staticmethod
    def forward(ctx, src, idx):
        ctx.save_for_backward(idx)
        ctx.size = src.shape
        return src[idx]

    @staticmethod
    def backward(ctx, dy):
        (idx,) = ctx.saved_tensors
        with _one_thread():  # rows gathered more than once sum their gradients
            return dy.new_zeros(ctx.size).index_put_((idx,), dy, accumulate=True), None


def _take(src: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """src[idx] along the first dimension."""
    return _Take.apply(src, idx) if _threaded_grad(src) else src[idx]


def _qkv(blk, x, c, n, T):
    """(q, k, v), each (n, H, T, D), of block `blk` on the residual stream x (n * T, C)."""
    C, H = c.n_embd, c.n_head
    h = _layer_norm(x, (C,), blk.ln_1.weight, blk.ln_1.bias, blk.ln_1.eps)
    return torch.addmm(blk.attn.c_attn.bias, h, blk.attn.c_attn.weight).view(n, T, 3, H, C // H).permute(2, 0, 3, 1, 4)


def _attn_out(blk, x, y):
    """x plus the attention output y (n, H, T, D) projected back: the first residual add."""
    n, H, T, D = y.shape
    return x + torch.addmm(blk.attn.c_proj.bias, y.transpose(1, 2).reshape(n * T, H * D), blk.attn.c_proj.weight)


_BF16_GELU: dict = {}


def _gelu(h: torch.Tensor, approximate: str) -> torch.Tensor:
    """GELU; on a bfloat16 CPU tensor outside autograd, read from a table of its value at each of
    the 65,536 bfloat16 numbers, made by the same kernel: the same bits in under half the time
    (0.59 against 1.30 ms on 786k values; the kernel is 31% of a 357k proxy's pool scoring)."""
    if h.dtype != torch.bfloat16 or h.device.type != "cpu" or h.requires_grad:
        return F.gelu(h, approximate=approximate)
    table = _BF16_GELU.get(approximate)
    if table is None:  # entry i: the number whose 16 bits read i
        every = torch.arange(2**16, dtype=torch.int32).to(torch.uint16).view(torch.bfloat16)
        table = _BF16_GELU[approximate] = F.gelu(every, approximate=approximate)
    return table.index_select(0, h.view(torch.uint16).to(torch.int32).flatten()).view(h.shape)


def _mlp(blk, x, c):
    """x plus the block's MLP of it: the second residual add."""
    h = _layer_norm(x, (c.n_embd,), blk.ln_2.weight, blk.ln_2.bias, blk.ln_2.eps)
    h = _gelu(torch.addmm(blk.mlp.c_fc.bias, h, blk.mlp.c_fc.weight), GELU[c.activation_function])
    return x + torch.addmm(blk.mlp.c_proj.bias, h, blk.mlp.c_proj.weight)


def _ln_f(tr, h):
    return _layer_norm(h, (h.shape[-1],), tr.ln_f.weight, tr.ln_f.bias, tr.ln_f.eps)


def gpt2_hidden(model, ids: torch.Tensor) -> torch.Tensor:
    """Final hidden states (after ln_f), (B, T, C), of a GPT-2 on `ids` (B, T), right-padded or
    not: causal attention keeps a row's padding out of its real positions, so those equal the HF
    pass with an attention mask. Differentiable: training runs through it too."""
    tr, c = model.transformer, model.config
    B, T = ids.shape
    x = (_take(tr.wte.weight, ids) + tr.wpe.weight[:T]).view(B * T, c.n_embd)
    for blk in tr.h:
        q, k, v = _qkv(blk, x, c, B, T)
        x = _mlp(blk, _attn_out(blk, x, F.scaled_dot_product_attention(q, k, v, is_causal=True)), c)
    return _ln_f(tr, x.view(B, T, c.n_embd))


def lm_logits(model, ids: torch.Tensor, start: int = 0, return_hidden: bool = False):
    """A causal LM's logits (float32) at positions start.. of `ids`, and with `return_hidden` the
    final hidden states there too; the direct pass where it applies (only the positions asked
    for go through the unembedding), else the HF model."""
    if direct_gpt2(model):
        h = gpt2_hidden(model, ids)[:, start:]
        logits = h @ model.lm_head.weight.T
    else:
        out = model(input_ids=ids, output_hidden_states=return_hidden)
        logits = out.logits[:, start:]
        h = out.hidden_states[-1][:, start:] if return_hidden else None
    return (logits.float(), h) if return_hidden else logits.float()


def last_token(ids: torch.Tensor, pad: int | None) -> torch.Tensor:
    """Each row's last non-pad position: where a sequence classifier reads its score (as HF does)."""
    if pad is None:
        return torch.full((len(ids),), ids.shape[1] - 1, device=ids.device)
    return (torch.arange(ids.shape[1], device=ids.device) * (ids != pad)).argmax(-1)


def reward_forward(model, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, **extra) -> torch.Tensor:
    """A reward model's score per row of right-padded `input_ids` (differentiable), through the
    direct pass where it applies, else the HF model."""
    if direct_gpt2(model):
        h = gpt2_hidden(model, input_ids)
        h = h[torch.arange(len(input_ids), device=h.device), last_token(input_ids, model.config.pad_token_id)]
        return (h @ model.score.weight.T)[:, 0]
    return model(input_ids=input_ids, attention_mask=attention_mask, **extra).logits[:, 0].float()


class _GPT2Decoder:
    """GPT-2's forward pass written out (nanoGPT style) over one preallocated KV cache.

    At the tiny world's sizes the generic loop spends as long in per-call bookkeeping, attention
    masks and growing the cache by concatenation as in its matmuls; here a step is the matmuls,
    one attention per layer over the cache and an in-place cache write. Same weights, same numbers
    to float rounding (tests/test_models.py checks the logits against the HF model's)."""

    def __init__(self, model, batch: int, max_len: int):
        c = model.config
        self.tr, self.head, self.c = model.transformer, model.lm_head.weight, c
        self.k = self.tr.wte.weight.new_empty(c.n_layer, batch, c.n_head, max_len, c.n_embd // c.n_head)
        self.v = torch.empty_like(self.k)
        self.pos = 0

    def __call__(self, ids: torch.Tensor) -> torch.Tensor:
        """Logits of the last position after appending `ids` (B, t) to the cache."""
        B, t = ids.shape
        C, p0 = self.c.n_embd, self.pos
        assert t == 1 or p0 == 0, "a causal block of several tokens only at the start"
        rows, sel = ids, None
        if t > 1:
            # a pool's 1,024 rows of one prompt, an evaluation's 8 samples of each: each distinct
            # prompt runs once (see PREFILL_MIN_TOKENS) and its keys/values fill all of its rows
            uniq, inv = torch.unique(ids, dim=0, return_inverse=True)
            reps = -(-PREFILL_MIN_TOKENS // (len(uniq) * t))
            if len(uniq) * reps < B:
                rows, sel = uniq.repeat_interleave(reps, 0), inv * reps
        n = len(rows)
        pos = torch.arange(p0, p0 + t, device=ids.device)
        x = (self.tr.wte.weight[rows] + self.tr.wpe.weight[pos]).view(n * t, C)
        for l, blk in enumerate(self.tr.h):
            q, k, v = _qkv(blk, x, self.c, n, t)
            self.k[l, :, :, p0 : p0 + t] = k if sel is None else k[sel]
            self.v[l, :, :, p0 : p0 + t] = v if sel is None else v[sel]
            if t > 1:  # the prompt attends causally to itself
                y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
            else:  # one new token attends to everything before it: two batched matmuls beat the
                # fused CPU kernel, which is built for long queries (measured 2.4x at T = 48)
                keys, values = self.k[l, :, :, : p0 + t], self.v[l, :, :, : p0 + t]
                y = torch.softmax(q @ keys.transpose(-1, -2) * q.shape[-1] ** -0.5, -1) @ values
            x = _mlp(blk, _attn_out(blk, x, y), self.c)
        self.pos = p0 + t
        h = _ln_f(self.tr, x.view(n, t, C)[:, -1])
        self.hidden = h if sel is None else h[sel]  # the final hidden state that predicts the next token
        return self.hidden @ self.head.T  # over all B rows: the matmul's row count decides its bits


def gpt2_hidden_with_prefix(model, prompt_ids, ids: torch.Tensor, owner=None) -> tuple[torch.Tensor, torch.Tensor]:
    """Final hidden states (after ln_f) of a plain GPT-2 on prompt + each row of `ids` (B, t,
    right-padded): each prompt's last position (P, C) and every completion position (B, t, C).

    `prompt_ids`: P prompts of one length (P lists, or one list for P = 1); `owner` (B,): the
    prompt of each row (None: the one prompt). The prompts run once; every completion attends to
    its prompt's keys/values (broadcast over the batch for one prompt, gathered for several),
    causally within itself. Right padding only follows a row's real tokens, so causal attention
    keeps it out of every real position. Same numbers as the HF forward pass on the joined text
    (tests/test_rm.py, tests/test_gold.py)."""
    tr, c = model.transformer, model.config
    C = c.n_embd
    B, t = ids.shape
    p = torch.tensor(prompt_ids, device=ids.device)
    p = p[None] if p.ndim == 1 else p
    P, Tp = p.shape
    rows = None if owner is None or P == 1 else torch.as_tensor(owner, device=ids.device)
    xp = (_take(tr.wte.weight, p) + tr.wpe.weight[:Tp]).view(P * Tp, C)
    x = (_take(tr.wte.weight, ids) + tr.wpe.weight[Tp : Tp + t]).view(B * t, C)
    # row i (completion position i) sees the whole prompt and completion positions 0..i
    mask = torch.ones(t, Tp + t, dtype=torch.bool, device=ids.device).tril(Tp)
    for blk in tr.h:
        qp, kp, vp = _qkv(blk, xp, c, P, Tp)
        xp = _mlp(blk, _attn_out(blk, xp, F.scaled_dot_product_attention(qp, kp, vp, is_causal=True)), c)
        q, k, v = _qkv(blk, x, c, B, t)
        kp, vp = (kp.expand(B, -1, -1, -1), vp.expand(B, -1, -1, -1)) if rows is None else (_take(kp, rows), _take(vp, rows))
        x = _mlp(blk, _attn_out(blk, x, F.scaled_dot_product_attention(q, torch.cat([kp, k], 2), torch.cat([vp, v], 2),
                                                                          attn_mask=mask)), c)
    return _ln_f(tr, xp.view(P, Tp, C)[:, -1]), _ln_f(tr, x.view(B, t, C))


@torch.no_grad()
def gpt2_rewards_with_prefix(model, prompt_ids, ids: torch.Tensor, last: torch.Tensor, body=None, owner=None) -> torch.Tensor:
    """A GPT-2 reward model's (`GPT2ForSequenceClassification`) scores on prompt + each row of
    `ids`, read at position `last` of each row, as the HF model reads its last non-pad token.
    `body`: the same model in another dtype to run the transformer in; the head stays `model`'s."""
    _, h = gpt2_hidden_with_prefix(model if body is None else body, prompt_ids, ids, owner)
    h = h[torch.arange(len(ids), device=ids.device), last].to(model.score.weight.dtype)
    return (h @ model.score.weight.T)[:, 0]


@torch.no_grad()
def gpt2_logprobs_with_prefix(model, prompt_ids, ids: torch.Tensor, owner=None) -> torch.Tensor:
    """A GPT-2 LM's log-probability of every token of each row of `ids` (B, t) after its prompt."""
    hp, h = gpt2_hidden_with_prefix(model, prompt_ids, ids, owner)
    # token j is predicted from the position before it: the prompt's last one for j = 0
    first = hp.expand(len(ids), -1) if owner is None or len(hp) == 1 else hp[torch.as_tensor(owner, device=ids.device)]
    before = torch.cat([first[:, None], h[:, :-1]], 1)
    logits = before @ model.lm_head.weight.T
    return torch.log_softmax(logits, -1).gather(-1, ids[..., None])[..., 0]


@torch.no_grad()
def completion_logprobs(model, tokenizer, prompts: list[str], completions: list[str], batch_size: int = 64) -> np.ndarray:
    """Mean log-probability per token of each completion given its prompt."""
    from .text import pad_ids, prompt_batches, split_at_prompts

    model.eval()
    out = np.zeros(len(prompts))
    # the tiny world's reference on a best-of-n pool (thousands of completions per prompt), a
    # PPO evaluation (8 per prompt: 0.24 s against 0.45 s joined, measured) or comparison pairs:
    # each distinct prompt runs once for all of its completions
    per_prompt = len(prompts) / max(1, len(set(prompts)))
    if direct_gpt2(model) and per_prompt >= LOGLIK_REUSE_MIN:
        groups, rest = split_at_prompts(tokenizer, prompts, completions)
        for p_ids, owner, c_ids, idx in prompt_batches(groups, 2 * batch_size):
            x, m = pad_ids(c_ids, tokenizer.pad_token_id)
            lp = gpt2_logprobs_with_prefix(model, p_ids, x.to(model.device), owner).cpu()
            m = m.to(lp.dtype)
            out[idx] = ((lp * m).sum(1) / m.sum(1)).double().numpy()
        if len(rest):
            out[rest] = completion_logprobs_joined(model, tokenizer, [prompts[i] for i in rest],
                                                   [completions[i] for i in rest], batch_size)
        return out
    return completion_logprobs_joined(model, tokenizer, prompts, completions, batch_size)


@torch.no_grad()
def completion_logprobs_joined(model, tokenizer, prompts: list[str], completions: list[str], batch_size: int = 64) -> np.ndarray:
    """`completion_logprobs` on padded batches of the joined texts: any model, any tokenizer."""
    from .text import encode_texts

    model.eval()
    out = np.zeros(len(prompts))
    for b in range(0, len(prompts), batch_size):
        ps = encode_texts(tokenizer, prompts[b : b + batch_size])
        cs = encode_texts(tokenizer, completions[b : b + batch_size])
        seqs = [p + c for p, c in zip(ps, cs)]
        width = max(len(s) for s in seqs)
        pad = tokenizer.pad_token_id
        x = torch.full((len(seqs), width), pad, dtype=torch.long)
        mask = torch.zeros((len(seqs), width), dtype=torch.bool)  # marks completion targets
        attn = torch.zeros((len(seqs), width), dtype=torch.long)
        for i, (p, s) in enumerate(zip(ps, seqs)):
            x[i, : len(s)] = torch.tensor(s)
            attn[i, : len(s)] = 1
            mask[i, len(p) : len(s)] = True
        dev = model.device
        with autocast():
            logits = (lm_logits(model, x.to(dev)) if direct_gpt2(model) else
                      model(input_ids=x.to(dev), attention_mask=attn.to(dev)).logits.float())[:, :-1]
        lp = torch.log_softmax(logits, -1).gather(-1, x[:, 1:, None].to(dev))[..., 0]
        m = mask[:, 1:].float().to(dev)
        out[b : b + len(seqs)] = ((lp * m).sum(1) / m.sum(1).clamp(min=1)).cpu().numpy()
    return out


@torch.no_grad()
def sample(
    model,
    prompt_ids: torch.Tensor,
    max_new_tokens: int,
    temperature: float = 1.0,
    banned: list[int] | None = None,
    generator: torch.Generator | None = None,
    return_scores: bool = False,
):
    """Sample fixed-length completions for equal-length prompts with a KV cache.

    A plain loop rather than `generate`: at tiny sizes `generate`'s per-step bookkeeping costs
    more than the forward pass itself. GPT-2 models (the tiny world's) run through the direct
    decoder above; every other model through `model(..., past_key_values=...)`.

    `return_scores`: also each sampled token's log-probability under the sampling distribution
    (banned tokens masked, at `temperature`) and the final hidden state that predicted it, (B, T)
    and (B, T, C): what a second forward pass over prompt + completion would give, to float
    rounding (tests/test_models.py), without that pass.
    """
    model.eval()
    logits_bias = torch.zeros(model.config.vocab_size, device=prompt_ids.device)
    if banned:
        logits_bias[banned] = -float("inf")
    if direct_gpt2(model):
        dec = _GPT2Decoder(model, prompt_ids.shape[0], prompt_ids.shape[1] + max_new_tokens - 1)
        step, hidden = dec, lambda: dec.hidden
    else:
        past, last_h = None, None

        def step(ids):
            nonlocal past, last_h
            out = model(input_ids=ids, past_key_values=past, use_cache=True, output_hidden_states=return_scores)
            past = out.past_key_values
            if return_scores:
                last_h = out.hidden_states[-1][:, -1]
            return out.logits[:, -1, :]

        hidden = lambda: last_h
    logits = step(prompt_ids)
    new, logps, hs = [], [], []
    for t in range(max_new_tokens):
        z = logits.float() / temperature + logits_bias
        # softmax, not exp(log_softmax): the draws stay bit-identical to pools already sampled
        nxt = torch.multinomial(torch.softmax(z, dim=-1), 1, generator=generator)
        new.append(nxt)
        if return_scores:
            logps.append(torch.log_softmax(z, dim=-1).gather(-1, nxt))
            hs.append(hidden())
        if t + 1 == max_new_tokens:
            break
        logits = step(nxt)
    y = torch.cat(new, dim=1)
    return (y, torch.cat(logps, 1), torch.stack(hs, 1)) if return_scores else y


def sample_texts(
    model,
    tokenizer,
    prompts: list[str],
    max_new_tokens: int,
    batch_size: int,
    seed: int,
    temperature: float = 1.0,
) -> list[str]:
    """Completions (as text) for each prompt; prompts are bucketed by token length, not padded."""
    g = generator(seed)
    banned = banned_token_ids(tokenizer)
    from .text import decode_ids, encode_texts

    enc = encode_texts(tokenizer, prompts)
    by_len: dict[int, list[int]] = {}
    for i, ids in enumerate(enc):
        by_len.setdefault(len(ids), []).append(i)
    result: list[str | None] = [None] * len(prompts)
    prog = Progress("sample", len(prompts))
    done = 0
    for length in sorted(by_len):
        idx = by_len[length]
        for b in range(0, len(idx), batch_size):
            chunk = idx[b : b + batch_size]
            x = torch.tensor([enc[i] for i in chunk], dtype=torch.long, device=g.device)
            with autocast():
                y = sample(model, x, max_new_tokens, temperature, banned, g)
            for i, text in zip(chunk, decode_ids(tokenizer, y.cpu())):
                result[i] = text
            done += len(chunk)
            prog(done, completions=done)
    return result  # type: ignore[return-value]


def read_metrics(model_dir: str | Path) -> dict:
    p = Path(model_dir) / "metrics.json"
    return json.loads(p.read_text()) if p.exists() else {}

