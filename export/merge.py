"""Merge mode: fold one expert into the base weights (peft ``merge_and_unload``) and save it as a Hugging Face model dir.

The merged dir is then exported by the onnxruntime-genai builder as its own model (``merged/<stage>/`` in the bundle): no LoRA
branch at run time, at the cost of one full model per merged expert.
"""

from __future__ import annotations

import shutil
from pathlib import Path

TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "chat_template.jinja",
    "generation_config.json",
    "vocab.json",
    "merges.txt",
    "tokenizer.model",
    "added_tokens.json",
)


def merge_expert(base_dir: str | Path, adapter_dir: str | Path, out_dir: str | Path) -> Path:
    """Write ``base + adapter`` merged into a float32 Hugging Face model dir at ``out_dir``."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    base_dir, out_dir = Path(base_dir), Path(out_dir)
    model = AutoModelForCausalLM.from_pretrained(str(base_dir), dtype=torch.float32, local_files_only=True)
    merged = PeftModel.from_pretrained(model, str(adapter_dir), is_trainable=False).merge_and_unload()
    out_dir.mkdir(parents=True, exist_ok=True)
    merged.save_pretrained(str(out_dir))
    for name in TOKENIZER_FILES:
        if (base_dir / name).is_file():
            shutil.copy2(base_dir / name, out_dir / name)
    del merged, model
    return out_dir
