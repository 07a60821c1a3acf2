"""A tiny `hf:` world built locally (no hub): BPE tokenizers, GPT-NeoX policy and proxy family,
a Llama sequence-classification gold on a different tokenizer, and a prompts file."""

import json
from pathlib import Path

import torch

from overopt.text import corpus_split


def bpe_tokenizer(vocab_size: int, text: str):
    """A byte-level BPE trained here: merges cross the prompt/completion boundary, unlike the
    tiny world's characters, so every consumer must score text, not token ids."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<|endoftext|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator([text[i : i + 2000] for i in range(0, len(text), 2000)], trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>", bos_token="<|endoftext|>",
                                   unk_token="<|endoftext|>", pad_token="<|endoftext|>", clean_up_tokenization_spaces=False)


def neox(tok, width: int, layers: int = 1, seed: int = 0):
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

    torch.manual_seed(seed)
    cfg = GPTNeoXConfig(vocab_size=len(tok), hidden_size=width, num_hidden_layers=layers, num_attention_heads=2,
                        intermediate_size=4 * width, max_position_embeddings=256, bos_token_id=tok.bos_token_id,
                        eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    return GPTNeoXForCausalLM(cfg)


def llama_rm(tok, width: int = 64, seed: int = 0):
    from transformers import LlamaConfig, LlamaForSequenceClassification

    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=width, num_hidden_layers=2, num_attention_heads=2,
                      num_key_value_heads=2, intermediate_size=2 * width, max_position_embeddings=256,
                      num_labels=1, pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id,
                      eos_token_id=tok.eos_token_id)
    model = LlamaForSequenceClassification(cfg)
    # a gold with a spread of scores worth ranking: scale the random head up
    with torch.no_grad():
        model.score.weight.mul_(20.0)
    return model


# a chat template of the usual shape: turns between role markers, the assistant's turn opened by
# the generation prompt
CHAT_TEMPLATE = ("{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}<|end|>{% endfor %}"
                 "{% if add_generation_prompt %}<|assistant|>{% endif %}")


def save(model, tok, out: Path) -> str:
    model.save_pretrained(str(out), safe_serialization=True)
    tok.save_pretrained(str(out))
    return str(out)


def build(root: Path) -> dict:
    """Write every model and the prompts file under `root`; return their paths."""
    train, held = corpus_split()
    text = train[:200_000]
    tok = bpe_tokenizer(320, text)
    gold_tok = bpe_tokenizer(400, text)  # the gold's own, different tokenizer
    paths = {
        "policy": save(neox(tok, 32, seed=1), tok, root / "policy"),
        "small": save(neox(tok, 16, seed=2), tok, root / "small"),
        "large": save(neox(tok, 32, layers=2, seed=3), tok, root / "large"),
        "gold": save(llama_rm(gold_tok, seed=4), gold_tok, root / "gold"),
    }
    # the same gold and policy, their tokenizers carrying a chat template
    import copy

    for name, t in (("gold", gold_tok), ("policy", tok)):
        chat = copy.deepcopy(t)
        chat.chat_template = CHAT_TEMPLATE
        model = llama_rm(gold_tok, seed=4) if name == "gold" else neox(tok, 32, seed=1)
        paths[f"{name}_chat"] = save(model, chat, root / f"{name}_chat")
    words = (train + " " + held).split(" ")
    prompts = [" ".join(words[i : i + 6]) for i in range(0, 6 * 120, 6)]
    with open(root / "prompts.jsonl", "w") as f:
        for i, p in enumerate(prompts):
            f.write(json.dumps({"id": i, "text": p}) + "\n")
    paths["prompts"] = str(root / "prompts.jsonl")
    return paths
