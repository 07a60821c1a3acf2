"""Real-scale models: `hf:` specs, LoRA adapters and quantized frozen copies.

A job refers to a model by a *ref*: a model directory (a tiny base, a trained proxy, a local HF
checkout) or a spec file `<name>.json` written by the workflow from the config's `hf:` spec:

    {"hf": "<hub id or local path>", "tokenizer": "<id or path>", "params": ...,
     "lora": {"r", "alpha", "dropout", "target_modules"}, "quantize": "none" | "8bit" | "4bit"}

A spec file, not the id itself, so that every job sees the whole spec (its tokenizer, its LoRA
settings) and Snakemake reruns the model's jobs when the spec changes.

LoRA: a LoRA-trained proxy saves only its adapter and its new scalar head (peft puts the
sequence-classification head in `modules_to_save`) plus `base.json`, the spec of the frozen base
it sits on; a 1.4B proxy costs megabytes on disk, not gigabytes.

Quantization (bitsandbytes LLM.int8 or nf4) is for frozen models only: fine-tuning a quantized
model is a different method (QLoRA), so trained weights are always full precision here. A
quantized pi_init reference is not exactly the policy's starting weights: its error shows as a
small KL at PPO step 0. (On CPU, bitsandbytes' nf4 kernels need layer widths that are multiples
of its 64-value blocks; every real model's are.)

Devices: every loader puts the model on `util.device()` (the job's GPU if it has one) and every
forward pass runs under `util.autocast()` (bf16 on a GPU). On the CPU nothing changes: float32,
the same numbers as before models could move.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from .util import device

ADAPTER_BASE = "base.json"  # in a LoRA proxy's directory: the spec of its frozen base


def read_spec(ref: str | Path) -> dict:
    """The spec a ref stands for: the spec file's contents, or a bare path/id with no options."""
    ref = str(ref)
    if ref.endswith(".json"):
        return json.loads(Path(ref).read_text())
    if _missing_folder(ref):
        raise FileNotFoundError(f"{ref}: no such directory")
    return {"hf": ref}


def _missing_folder(ref: str) -> bool:
    """Whether `ref` names a local folder that is not there. A Hugging Face id is `name` or
    `owner/name`; a ref that is absolute, starts with `.`, has more parts, or whose first part is a
    folder here is a path, and asking the hub for it would only end in a connection error."""
    p = Path(ref)
    if p.exists():
        return False
    return p.is_absolute() or ref.startswith(".") or len(p.parts) > 2 or (len(p.parts) == 2 and Path(p.parts[0]).is_dir())


def tokenizer_source(ref: str | Path) -> str:
    spec = read_spec(ref)
    return spec.get("tokenizer") or spec["hf"]


def is_adapter_dir(ref: str | Path) -> bool:
    return Path(ref).is_dir() and (Path(ref) / "adapter_config.json").is_file()


def quantization_config(mode: str | None):
    """bitsandbytes settings for `quantize:`; None for full precision.

    4bit is nf4 (the normal-float grid suits normally distributed weights) with double quantization
    of the block scales off: at frozen-scoring scale it saves little and costs accuracy. Compute
    runs in bf16 on a GPU, float32 on CPU (bitsandbytes' CPU kernels want float32).
    """
    if mode in (None, "none"):
        return None
    from transformers import BitsAndBytesConfig

    if mode == "8bit":
        return BitsAndBytesConfig(load_in_8bit=True)
    if mode == "4bit":
        compute = torch.bfloat16 if device().type == "cuda" else torch.float32
        return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=compute)
    raise ValueError(f"quantize must be none, 8bit or 4bit, got {mode!r}")


def from_pretrained_kwargs(spec: dict, frozen: bool, dtype) -> dict:
    """Keyword arguments for `from_pretrained`: safetensors only, quantized only when frozen."""
    kw = {"use_safetensors": True}
    q = quantization_config(spec.get("quantize")) if frozen else None
    if q is None:
        kw["dtype"] = dtype
    else:
        kw["quantization_config"] = q
        on_gpu = device().type == "cuda"
        kw["dtype"] = torch.bfloat16 if on_gpu else torch.float32
        if on_gpu:
            kw["device_map"] = {"": device().index or 0}  # bitsandbytes quantizes as it places
    return kw


def to_device(model):
    """Move a loaded model to `util.device()`; a quantized one was placed while loading (and
    transformers refuses to move it)."""
    if getattr(model, "hf_quantizer", None) is None:
        model.to(device())
    return model


def add_lora(model, lora: dict, task: str):
    """Wrap `model` in a fresh LoRA adapter; only the adapter (and, for RMs, the new head) trains.

    `target_modules` left out means peft's default for the architecture (the attention
    projections of GPT-NeoX, Llama, GPT-2, ...). B starts at zero, so the wrapped model computes
    exactly what the base computes until the first update.
    """
    from peft import LoraConfig, get_peft_model

    cfg = LoraConfig(
        r=int(lora.get("r", 8)),
        lora_alpha=float(lora.get("alpha", 2 * int(lora.get("r", 8)))),
        lora_dropout=float(lora.get("dropout", 0.0)),
        target_modules=lora.get("target_modules"),
        task_type=task,
    )
    return get_peft_model(model, cfg)


def trainable_parameters(model) -> list[torch.nn.Parameter]:
    return [p for p in model.parameters() if p.requires_grad]
