"""The tiny world's GPT-2s and character tokenizer, loaded from their saved directories into
plain torch modules and the tokenizers library, without importing transformers.

Importing transformers' GPT-2 and tokenizer classes and going through `from_pretrained` took
1.7 s of each job's start (measured, warm page cache), longer than the work of many of the
default study's ~180 model jobs. The modules here hold the same tensors under the same names
in the same order (so optimizers, gradient clipping and checkpoints see what they saw), run
only through the direct passes of `models` (which is what every tiny-world pass already ran),
and save the Hugging Face layout (config.json, model.safetensors, tokenizer files), so every
directory still loads with transformers (`OVEROPT_ENGINE=hf`, tests/test_engine.py).

Anything else (a hub model, an `hf:` spec, LoRA, quantization, a GPU, attention or dropout
variants) loads through transformers as before: `loadable` says which.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import torch
from torch import nn

CONFIG, WEIGHTS = "config.json", "model.safetensors"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")
ARCH = {"lm": "GPT2LMHeadModel", "reward": "GPT2ForSequenceClassification"}
# GPT-2 activations the direct passes of `models` implement, as `F.gelu`'s `approximate`
GELU = {"gelu_pytorch_tanh": "tanh", "gelu_new": "tanh", "gelu": "none"}


def direct_config(c) -> bool:
    """Whether a GPT-2 config (transformers' or `Config`) has the activation and attention variants
    the direct passes of `models` implement."""
    return (getattr(c, "activation_function", None) in GELU and getattr(c, "scale_attn_weights", True)
            and not getattr(c, "scale_attn_by_inverse_layer_idx", False) and not getattr(c, "reorder_and_upcast_attn", False))


def _config(path: Path) -> dict | None:
    f = path / CONFIG
    return json.loads(f.read_text()) if f.is_file() else None


def loadable(path: str | Path) -> bool:
    """Whether the model directory `path` loads here: a float32 GPT-2 of the kind the direct passes
    compute, saved as safetensors, with a tokenizers-library tokenizer, on the CPU, and the HF
    engine not asked for."""
    from .util import device

    path = Path(path)
    if os.environ.get("OVEROPT_ENGINE") == "hf" or device().type != "cpu" or not path.is_dir():
        return False
    c = _config(path)
    return (c is not None and c.get("model_type") == "gpt2" and (path / WEIGHTS).is_file()
            and not (path / "adapter_config.json").exists() and "quantization_config" not in c
            and direct_config(Config(c))
            and all(c.get(k, 0.1) == 0 for k in ("resid_pdrop", "embd_pdrop", "attn_pdrop"))
            and c.get("dtype", c.get("torch_dtype", "float32")) == "float32"
            and c.get("tie_word_embeddings", True) and c.get("n_inner") in (None, 4 * c["n_embd"])
            and tokenizer_loadable(path))


def tokenizer_loadable(path: str | Path) -> bool:
    """Whether `path` holds the tiny world's character tokenizer (`text.build_char_tokenizer`: a
    word-level model over single characters, no chat template, no extra special tokens)."""
    path = Path(path)
    if (os.environ.get("OVEROPT_ENGINE") == "hf" or not (path / "tokenizer.json").is_file()
            or not (path / "tokenizer_config.json").is_file() or any(path.glob("chat_template*"))):
        return False
    t = json.loads((path / "tokenizer_config.json").read_text())
    spec = json.loads((path / "tokenizer.json").read_text())
    return (t.get("tokenizer_class") in ("TokenizersBackend", "PreTrainedTokenizerFast") and not t.get("chat_template")
            and t.get("pad_token") is not None and not t.get("extra_special_tokens")
            and not t.get("additional_special_tokens") and spec.get("model", {}).get("type") == "WordLevel"
            and (spec.get("pre_tokenizer") or {}).get("pattern") == {"Regex": "."})


class Config:
    """config.json as attributes (what the direct passes and the jobs read), written back as read."""

    def __init__(self, d: dict):
        self.__dict__.update(d)

    @property
    def hidden_size(self) -> int:
        return self.n_embd

    def to_dict(self) -> dict:
        return dict(vars(self))


class Tensors(nn.Module):
    """Named parameters of the given shapes, left uninitialised (loading fills them): no
    initialiser runs and torch's global generator is not drawn from. Holds a layer norm's `eps`."""

    def __init__(self, eps: float | None = None, **shapes):
        super().__init__()
        for name, shape in shapes.items():
            setattr(self, name, nn.Parameter(torch.empty(shape)))
        if eps is not None:
            self.eps = eps


def _linear(n_in: int, n_out: int) -> Tensors:  # GPT-2's Conv1D: y = x @ weight + bias
    return Tensors(weight=(n_in, n_out), bias=(n_out,))


def _norm(C: int, eps: float) -> Tensors:
    return Tensors(eps, weight=(C,), bias=(C,))


class Block(nn.Module):
    def __init__(self, C: int, eps: float):
        super().__init__()
        self.ln_1 = _norm(C, eps)
        self.attn = nn.Module()
        self.attn.c_attn, self.attn.c_proj = _linear(C, 3 * C), _linear(C, C)
        self.ln_2 = _norm(C, eps)
        self.mlp = nn.Module()
        self.mlp.c_fc, self.mlp.c_proj = _linear(C, 4 * C), _linear(4 * C, C)


class Body(nn.Module):
    def __init__(self, c: Config):
        super().__init__()
        eps = getattr(c, "layer_norm_epsilon", 1e-5)
        self.wte, self.wpe = Tensors(weight=(c.vocab_size, c.n_embd)), Tensors(weight=(c.n_positions, c.n_embd))
        self.h = nn.ModuleList(Block(c.n_embd, eps) for _ in range(c.n_layer))
        self.ln_f = _norm(c.n_embd, eps)


class GPT2(nn.Module):
    """A GPT-2 LM (`lm_head` tied to the token embedding) or reward model (`score`, one output):
    parameters only; `models.gpt2_hidden` and its siblings are its forward passes."""

    def __init__(self, config: Config, kind: str):
        super().__init__()
        self.config, self.kind = config, kind
        self.transformer = Body(config)
        if kind == "lm":
            self.lm_head = nn.Module()
            self.lm_head.weight = self.transformer.wte.weight  # tied
        else:
            self.score = Tensors(weight=(1, config.n_embd))

    @property
    def device(self) -> torch.device:
        return self.transformer.wte.weight.device

    def forward(self, *args, **kwargs):
        raise TypeError("overopt.plain.GPT2 runs only through the direct passes of overopt.models "
                        "(float32, no autocast); OVEROPT_ENGINE=hf loads the transformers model instead")

    def save_pretrained(self, out: str | Path, safe_serialization: bool = True) -> None:
        """config.json and model.safetensors as transformers writes them (the tied head left out)."""
        from safetensors.torch import save_file

        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        cfg = self.config.to_dict()
        cfg["architectures"] = [ARCH[self.kind]]
        if self.kind == "reward":
            cfg.update(id2label={"0": "LABEL_0"}, label2id={"LABEL_0": 0})
        (out / CONFIG).write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")
        tensors = {k: v.detach().contiguous() for k, v in self.state_dict().items() if k != "lm_head.weight"}
        save_file(tensors, str(out / WEIGHTS), metadata={"format": "pt"})


def load(path: str | Path, kind: str, pad_token_id: int | None = None) -> GPT2:
    """The model in `path` as `kind` ("lm" or "reward"), in eval mode. Its tensors are filled with
    the saved ones, so loading draws nothing from torch's global generator; a reward
    model read from an LM gets a fresh scalar head drawn as transformers draws it (normal, std
    initializer_range, from that generator), so seeded jobs give the same proxies either way."""
    from safetensors.torch import load_file

    path = Path(path)
    d = _config(path)
    if pad_token_id is not None:
        d["pad_token_id"] = pad_token_id
    model = GPT2(Config(d), kind)
    state = load_file(str(path / WEIGHTS))
    state.pop("lm_head.weight", None)  # tied to the embedding
    if kind == "lm":
        state.pop("score.weight", None)
    elif "score.weight" not in state:
        state["score.weight"] = torch.nn.init.normal_(torch.empty(1, d["n_embd"]), mean=0.0,
                                                      std=d.get("initializer_range", 0.02))
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [k for k in missing if k != "lm_head.weight"]
    if missing or unexpected:
        raise ValueError(f"{path / WEIGHTS}: not a GPT-2 {kind} checkpoint (missing {missing[:3]}, unexpected {unexpected[:3]})")
    return model.eval()


class Tokenizer:
    """A tokenizers-library tokenizer with the parts of transformers' interface the jobs use."""

    def __init__(self, path: str | Path):
        from tokenizers import Tokenizer as Backend

        path = Path(path)
        self.name_or_path = str(path)
        self._files = path
        self.backend_tokenizer = Backend.from_file(str(path / "tokenizer.json"))
        self.backend_tokenizer.no_padding()
        self.backend_tokenizer.no_truncation()
        t = json.loads((path / "tokenizer_config.json").read_text())
        for name in ("pad", "bos", "eos", "unk"):
            tok = t.get(f"{name}_token")
            tok = tok.get("content") if isinstance(tok, dict) else tok
            setattr(self, f"{name}_token", tok)
            setattr(self, f"{name}_token_id", None if tok is None else self.backend_tokenizer.token_to_id(tok))
        self.padding_side = "right"
        self.all_special_ids = sorted({i for i in (self.bos_token_id, self.eos_token_id, self.unk_token_id,
                                                    self.pad_token_id) if i is not None})

    def __len__(self) -> int:
        return self.backend_tokenizer.get_vocab_size(with_added_tokens=True)

    def get_vocab(self) -> dict[str, int]:
        return self.backend_tokenizer.get_vocab(with_added_tokens=True)

    def __call__(self, texts, add_special_tokens: bool = True, return_tensors: str | None = None, padding: bool = False):
        single = isinstance(texts, str)
        enc = self.backend_tokenizer.encode_batch([texts] if single else list(texts), add_special_tokens=add_special_tokens)
        ids = [e.ids for e in enc]
        if return_tensors is None and not padding:
            return {"input_ids": ids[0] if single else ids}
        from .text import pad_ids

        x, mask = pad_ids(ids, self.pad_token_id)
        return {"input_ids": x, "attention_mask": mask}

    def batch_decode(self, ids, skip_special_tokens: bool = False) -> list[str]:
        rows = ids.tolist() if hasattr(ids, "tolist") else [list(r) for r in ids]
        return self.backend_tokenizer.decode_batch(rows, skip_special_tokens=skip_special_tokens)

    def convert_ids_to_tokens(self, ids):
        if isinstance(ids, int):
            return self.backend_tokenizer.id_to_token(ids)
        return [self.backend_tokenizer.id_to_token(i) for i in ids]

    def save_pretrained(self, out: str | Path) -> None:
        for f in TOKENIZER_FILES:
            if (self._files / f).is_file():
                shutil.copyfile(self._files / f, Path(out) / f)
