"""Prompt templates: how a model reads a prompt and its completion (a model spec's `template:`).

- `raw`: the text as the policy writes it, prompt + completion (every tiny model; the default).
- `chat`: the tokenizer's own chat template, the prompt as the user's turn and the completion as
  the assistant's. A reward model trained on chat-formatted pairs scores that format, not raw text
  (users of public reward models trip on exactly this); a chat-tuned policy is prompted with the
  user turn and its generation prompt.

Every model applies its own template to the same (prompt, completion) pairs: the pool and the
comparisons store raw prompts and completions, and the gold, each proxy (and its base's
likelihood) and the policy render them as their specs say. A rendered pair is again a
(prefix, rest) pair whose concatenation is the templated text, so every code path that reads
"prompt + completion" (prompt reuse, completion log-likelihoods) reads it unchanged.
"""

from __future__ import annotations

TEMPLATES = ("raw", "chat")


def template_of(ref) -> str:
    """The template of a model ref (an hf spec file, a directory): raw unless the spec says."""
    from .hf import read_spec

    return read_spec(ref).get("template", "raw")


def _turns(prompt: str, completion: str | None = None) -> list[dict]:
    turns = [{"role": "user", "content": prompt}]
    return turns + ([{"role": "assistant", "content": completion}] if completion is not None else [])


def render(tokenizer, template: str, prompts: list[str], completions: list[str]) -> tuple[list[str], list[str]]:
    """(prefixes, rests): what a model with `template` reads, split where the completion starts."""
    if template == "raw":
        return list(prompts), list(completions)
    check(tokenizer, template)
    heads = render_prompts(tokenizer, template, prompts)
    rests = []
    for p, c, head in zip(prompts, completions, heads):
        full = tokenizer.apply_chat_template(_turns(p, c), tokenize=False)
        if not full.startswith(head):
            raise ValueError(f"chat template of {tokenizer.name_or_path!r}: the conversation does not start with "
                             f"its own generation prompt ({head[-40:]!r}); use template: raw")
        rests.append(full[len(head):])
    return heads, rests


def render_prompts(tokenizer, template: str, prompts: list[str]) -> list[str]:
    """What a policy with `template` is prompted with: the prompt, or the user turn and the
    assistant's generation prompt."""
    if template == "raw":
        return list(prompts)
    check(tokenizer, template)
    return [tokenizer.apply_chat_template(_turns(p), tokenize=False, add_generation_prompt=True) for p in prompts]


def check(tokenizer, template: str) -> None:
    if template not in TEMPLATES:
        raise ValueError(f"template must be one of {', '.join(TEMPLATES)}, got {template!r}")
    if template == "chat" and not getattr(tokenizer, "chat_template", None):
        raise ValueError(f"template: chat, but the tokenizer of {tokenizer.name_or_path!r} has no chat template")


def render_frame(tokenizer, template: str, df, completions: tuple[str, ...] = ("completion",)):
    """A table of raw prompts and completions (a pool, comparison pairs) as a model with
    `template` reads them: the same rows, `prompt` and each completion column rendered."""
    if template == "raw":
        return df
    df = df.copy()
    prompts = df["prompt"].tolist()
    for col in completions:
        heads, rests = render(tokenizer, template, prompts, df[col].tolist())
        df[col] = rests
    df["prompt"] = heads
    return df


def proxy_template(rm_dir) -> str:
    """The template a trained proxy reads with: its base's, recorded in its metrics.json."""
    import json
    from pathlib import Path

    metrics = Path(rm_dir) / "metrics.json"
    return json.loads(metrics.read_text()).get("template", "raw") if metrics.is_file() else "raw"
