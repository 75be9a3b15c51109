"""``TorchEngine``: the development engine — transformers + peft on CPU (or any torch device), greedy decoding.

Every expert adapter is loaded ONCE into one ``PeftModel`` (``PeftModel.from_pretrained`` for the first, ``load_adapter``
for the rest) and activated per call with ``set_adapter``; ``adapter=None`` runs the base model under
``disable_adapter()``. Decoding is a plain greedy loop over the KV cache so prefill (prompt -> first token) and decode
(every later token) are timed separately, and the adapter switch is timed on its own.

    engine = TorchEngine("models/qwen2.5-0.5b", adapters="out/")        # out/<stage>/ peft dirs
    gen = engine.generate([{"role": "user", "content": "Hi"}], adapter="extraction", max_new_tokens=64)
    gen.text, gen.prompt_tokens, gen.completion_tokens, gen.timings.prefill_s
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from pathlib import Path
from typing import Any, Mapping, Sequence

from memlora import STAGES
from memlora.errors import AdapterError, ImageError, MemloraError
from memlora.runtime.chat_template import apply_chat_template
from memlora.runtime.engine import Generation, Message, Timings, resolve_min_new_tokens

DTYPES = {"float32": "float32", "fp32": "float32", "bfloat16": "bfloat16", "bf16": "bfloat16", "float16": "float16", "fp16": "float16"}


def resolve_adapter_dirs(adapters: Mapping[str, str | os.PathLike] | str | os.PathLike | None) -> dict[str, Path]:
    """Normalise the ``adapters`` argument to ``{name: adapter dir}``.

    Accepts a dict name -> dir; a training output dir (``out/experts.json`` if present, else every ``out/<stage>/`` that
    holds an ``adapter_config.json``); or one adapter dir (named after its folder). ``None`` -> no adapters.
    """
    if adapters is None:
        return {}
    if isinstance(adapters, Mapping):
        found = {str(name): Path(path) for name, path in adapters.items()}
    else:
        root = Path(adapters)
        if not root.is_dir():
            raise AdapterError(f"adapters directory not found: {root}")
        if (root / "adapter_config.json").is_file():
            found = {root.name: root}
        elif (root / "experts.json").is_file():
            try:
                experts = json.loads((root / "experts.json").read_text())["experts"]
                found = {stage: root / entry.get("path", stage) for stage, entry in experts.items()}
            except (ValueError, KeyError, TypeError, AttributeError) as exc:
                raise AdapterError(f"{root / 'experts.json'} is malformed ({exc}); "
                                   "expected {'experts': {stage: {'path': ...}}}") from exc
        else:
            found = {stage: root / stage for stage in STAGES if (root / stage / "adapter_config.json").is_file()}
            if not found:
                raise AdapterError(f"{root} holds no adapter: expected stage subfolders {list(STAGES)} with adapter_config.json")
    for name, path in found.items():
        config = path / "adapter_config.json"
        if not config.is_file():
            raise AdapterError(f"adapter {name!r}: {config} not found (a peft adapter dir needs adapter_config.json)")
        try:
            peft_type = json.loads(config.read_text()).get("peft_type")
        except ValueError as exc:
            raise AdapterError(f"adapter {name!r}: {config} is not valid JSON ({exc})") from exc
        if peft_type != "LORA":
            raise AdapterError(f"adapter {name!r} is a {peft_type} adapter; memlora experts are LoRA adapters")
    return found


def peft_name(name: str) -> str:
    """The name an expert gets inside the PeftModel. Prefixed because peft stores adapters as ``nn.ModuleDict`` keys and
    a bare ``"update"`` (a stage name!) collides with ``ModuleDict.update`` ("attribute 'update' already exists")."""
    return f"expert_{name}"


class TorchEngine:
    """Greedy generation with transformers + peft; one PeftModel holds every expert adapter."""

    supports_images = False
    """Text-only; the VLM engine handles images."""

    def __init__(
        self,
        model_dir: str | os.PathLike,
        adapters: Mapping[str, str | os.PathLike] | str | os.PathLike | None = None,
        threads: int | None = None,
        dtype: str = "float32",
        device: str = "cpu",
        min_new_tokens: int = 0,
    ):
        """``min_new_tokens``: ignore EOS until that many tokens were generated (speed benchmarks on random weights)."""
        import torch
        from transformers import AutoTokenizer

        self.model_dir = Path(model_dir)
        if not (self.model_dir / "config.json").is_file():
            raise MemloraError(f"no model at {self.model_dir} (expected a local transformers checkpoint with config.json)")
        if dtype not in DTYPES:
            raise MemloraError(f"unknown dtype {dtype!r}; choose one of {sorted(set(DTYPES))}")
        if threads:
            torch.set_num_threads(int(threads))
        self.device = torch.device(device)
        self.min_new_tokens = int(min_new_tokens)
        self.adapter_dirs = resolve_adapter_dirs(adapters)

        self.tokenizer = AutoTokenizer.from_pretrained(str(self.model_dir), local_files_only=True)
        if not getattr(self.tokenizer, "chat_template", None):
            raise MemloraError(f"the tokenizer in {self.model_dir} has no chat template (tokenizer_config.json 'chat_template')")
        base = self._load_base_model(getattr(torch, DTYPES[dtype])).to(self.device).eval()
        self.eos_ids = self._eos_ids(base)
        self.max_positions = getattr(base.config, "max_position_embeddings", None) or getattr(
            getattr(base.config, "text_config", None), "max_position_embeddings", None
        )
        self.model = self._load_adapters(base) if self.adapter_dirs else base
        self.adapters: tuple[str, ...] = tuple(self.adapter_dirs)
        self.active_adapter: str | None = None

    # -- loading -------------------------------------------------------------------------------------------------
    def _load_base_model(self, torch_dtype):
        """The base model (a causal LM here; the VLM engine loads an image-text-to-text model)."""
        from transformers import AutoModelForCausalLM

        return AutoModelForCausalLM.from_pretrained(str(self.model_dir), dtype=torch_dtype, local_files_only=True)

    def _eos_ids(self, model) -> set[int]:
        ids: set[int] = set()
        for value in (self.tokenizer.eos_token_id, getattr(model.generation_config, "eos_token_id", None)):
            if value is None:
                continue
            ids.update(int(v) for v in (value if isinstance(value, (list, tuple)) else [value]))
        return ids

    def _load_adapters(self, base):
        from peft import PeftModel

        model = None
        for name, path in self.adapter_dirs.items():
            try:
                if model is None:
                    model = PeftModel.from_pretrained(base, str(path), adapter_name=peft_name(name), is_trainable=False)
                else:
                    model.load_adapter(str(path), adapter_name=peft_name(name), is_trainable=False)
            except (RuntimeError, ValueError, KeyError) as exc:
                first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                raise AdapterError(
                    f"adapter {name!r} ({path}) does not fit the base model {self.model_dir}: {first[:300]} "
                    "(was it trained for another base model?)"
                ) from exc
        model.eval()
        return model

    # -- adapter switching ---------------------------------------------------------------------------------------
    def _activate(self, adapter: str | None):
        """Make ``adapter`` active; return a context manager to run under (disables adapters for the base model)."""
        if adapter is None:
            if self.adapters:
                return self.model.disable_adapter()
            return contextlib.nullcontext()
        if adapter not in self.adapters:
            raise AdapterError(
                f"unknown adapter {adapter!r}: this engine has {list(self.adapters) or 'no adapters'} "
                "(None runs the base model)"
            )
        if self.active_adapter != adapter:
            self.model.set_adapter(peft_name(adapter), inference_mode=True)
            self.active_adapter = adapter
        return contextlib.nullcontext()

    # -- Engine protocol -------------------------------------------------------------------------------------------
    def render(self, messages: list[Message]) -> list[int]:
        """Token ids of ``messages`` rendered with the chat template plus the assistant generation prompt (a system
        message folded into the first user turn when the template takes none)."""
        text = apply_chat_template(self.tokenizer, messages)
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def count_tokens(self, text: str) -> int:
        return len(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def generate(
        self,
        messages: list[Message],
        adapter: str | None = None,
        images: Sequence[Any] | None = None,
        max_new_tokens: int = 128,
        **options: Any,
    ) -> Generation:
        """Greedy decode. Options: ``min_new_tokens`` (alias ``force_new_tokens``: EOS refused until that many tokens; the
        engine's own minimum still applies); other engines' options are ignored."""
        import torch

        if images:
            raise ImageError("TorchEngine is text-only: images need a vision-language engine")
        min_new = resolve_min_new_tokens(options, self.min_new_tokens)
        start = time.perf_counter()
        prompt_ids = self.render(messages)
        if self.max_positions and len(prompt_ids) >= self.max_positions:
            raise MemloraError(f"prompt of {len(prompt_ids)} tokens does not fit the model's context of {self.max_positions}")
        if self.max_positions:
            max_new_tokens = min(max_new_tokens, self.max_positions - len(prompt_ids))

        generated: list[int] = []
        prefill_s = decode_s = 0.0
        with contextlib.ExitStack() as stack, torch.inference_mode():
            switch_start = time.perf_counter()
            stack.enter_context(self._activate(adapter))
            switch_s = time.perf_counter() - switch_start
            step_start = time.perf_counter()
            inputs = torch.tensor([prompt_ids], device=self.device)
            past = None
            while len(generated) < max_new_tokens:
                out = self._forward(inputs, past)
                past = out.past_key_values
                logits = out.logits[0, -1].float()
                if len(generated) < min_new and self.eos_ids:
                    logits[list(self.eos_ids)] = float("-inf")
                token = int(torch.argmax(logits))
                generated.append(token)
                now = time.perf_counter()
                if len(generated) == 1:
                    prefill_s = now - step_start
                else:
                    decode_s += now - step_start
                if token in self.eos_ids:
                    break
                step_start = time.perf_counter()
                inputs = torch.tensor([[token]], device=self.device)

        text_ids = generated[:-1] if generated and generated[-1] in self.eos_ids else generated
        text = self.tokenizer.decode(text_ids, skip_special_tokens=True)
        timings = Timings(prefill_s=prefill_s, decode_s=decode_s, switch_s=switch_s, total_s=time.perf_counter() - start)
        return Generation(text=text, prompt_tokens=len(prompt_ids), completion_tokens=len(generated), timings=timings,
                          token_ids=generated)

    def _forward(self, input_ids, past):
        """One forward step through the (adapter-injected) causal LM, reusing the KV cache."""
        lm = self.model.get_base_model() if self.adapters else self.model
        return lm(input_ids=input_ids, past_key_values=past, use_cache=True)
