"""The project's byte-level BPE tokenizer (ChatML chat template), trained locally and deterministically, and the seeded
torch generator the model builders share (``memlora.models``, ``memlora.vlm_models``)."""

from __future__ import annotations

import json
import os
from pathlib import Path

from memlora.errors import MemloraError
from memlora.paths import data_file

PAD_TOKEN = "<|endoftext|>"
IM_START = "<|im_start|>"
IM_END = "<|im_end|>"
SPECIAL_TOKENS = (PAD_TOKEN, IM_START, IM_END)
TOKENIZER_VOCAB_SIZE = 2048
CORPUS_NAME = "tokenizer_corpus.txt"

# Qwen2's pre-tokenizer split (digits one at a time, words with a leading space), then byte-level without a second regex.
PRETOKENIZE_REGEX = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)

CHAT_TEMPLATE = (
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)


def build_tokenizer(out_dir=None, corpus: str | os.PathLike | None = None, vocab_size: int = TOKENIZER_VOCAB_SIZE):
    """Train the byte-level BPE tokenizer (deterministic) and return it as a ``PreTrainedTokenizerFast``.

    With ``out_dir`` it is also saved there (tokenizer.json + tokenizer_config.json with the ChatML chat template).
    """
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    corpus_path = Path(corpus) if corpus is not None else data_file(CORPUS_NAME)
    if not corpus_path.is_file():
        raise MemloraError(f"tokenizer corpus not found: {corpus_path}")
    text = corpus_path.read_text(encoding="utf-8")
    # paragraphs as training units, in file order (the trainer's counts do not depend on order, but keep it fixed)
    paragraphs = [p for p in text.split("\n\n") if p.strip()]

    tok = Tokenizer(models.BPE(unk_token=None, byte_fallback=False))
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(PRETOKENIZE_REGEX), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, min_frequency=2, special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False,
    )
    tok.train_from_iterator(paragraphs, trainer=trainer, length=len(paragraphs))

    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token=IM_END, pad_token=PAD_TOKEN, unk_token=None, bos_token=None,
        additional_special_tokens=[IM_START, IM_END], model_max_length=32768, clean_up_tokenization_spaces=False,
        chat_template=CHAT_TEMPLATE,
    )
    if out_dir is not None:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        fast.save_pretrained(out)
        _normalise_tokenizer_files(out)
    return fast


def _normalise_tokenizer_files(out: Path) -> None:
    """Rewrite tokenizer_config.json with sorted keys and the ChatML template inline (stable bytes across runs)."""
    cfg_path = out / "tokenizer_config.json"
    cfg = json.loads(cfg_path.read_text(encoding="utf-8"))
    cfg["chat_template"] = CHAT_TEMPLATE
    cfg["tokenizer_class"] = "PreTrainedTokenizerFast"
    cfg_path.write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    jinja = out / "chat_template.jinja"
    if jinja.exists():  # keep one source of truth for the template
        jinja.unlink()


class fork_rng:
    """Seed torch's CPU generator for the duration of a block and restore the caller's state afterwards."""

    def __init__(self, seed: int):
        self.seed = seed

    def __enter__(self):
        import torch

        self._state = torch.random.get_rng_state()
        torch.manual_seed(self.seed)

    def __exit__(self, *exc):
        import torch

        torch.random.set_rng_state(self._state)
        return False
