"""The peer: llama.cpp (through the optional ``llama-cpp-python``) on the same model and the same experts.

- The HF checkpoint is converted with llama.cpp's own ``convert_hf_to_gguf.py`` to f16 GGUF, then quantized to Q4_0 with
  ``llama_model_quantize``; each peft expert is converted with ``convert_lora_to_gguf.py`` to an f32 GGUF LoRA (f32 adapters
  are faster than f16 on CPU here). The converters ship in llama-cpp-python's sdist, not in its wheel: they are taken from
  ``MEMLORA_LLAMA_CPP_SRC`` or the memlora cache (``peer/llama.cpp-src-<version>``, filled from the sdist by
  ``pip download``). A locally trained tokenizer has no known pre-tokenizer hash, so the converter is told it is Qwen2's.
- A real model shipped as GGUF (SmolLM2's Q4_1) is run as shipped and as Q4_0 requantized from the same weights
  (``llama_model_quantize`` with ``allow_requantize``): the same weights as the bundle, no detour through the de-quantized
  HF folder (``ensure_gguf_from_source``).
- ``LlamaCppEngine`` implements the Engine protocol: the same chat template rendering as the other engines, greedy argmax,
  the expert activated with llama.cpp's adapter API and the KV cache CLEARED on every call (llama.cpp does not invalidate it
  when the adapter changes; a fresh generator per call is also what the ONNX engine does).
- When the installed llama.cpp carries its AMX kernels (what ``pip install`` builds on a CPU with AMX: ``-march=native``),
  its extra weight buffers (the AMX and repacked layouts) are turned off: llama-cpp-python 0.3.36 crashes in
  ``ggml_backend_amx_mul_mat`` on the first decode (measured on an Intel Xeon with AMX; upstream:
  https://github.com/ggml-org/llama.cpp/issues/20824, and https://github.com/ggml-org/llama.cpp/pull/16315 on wrong Q4_0
  results from the same kernels). Without them llama.cpp is slower on Q4_0 than with its repacked layout, so the report
  says so (``extra_buffers`` in the peer's row). A build without AMX keeps the repacked layout (docs/evaluation.md).
"""

from __future__ import annotations

import ctypes
import importlib.metadata
import json
import os
import subprocess
import sys
import tarfile
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from memlora.errors import AdapterError, ImageError, MemloraError
from memlora.paths import cache_dir
from memlora.runtime.chat_template import ChatTemplate
from memlora.runtime.engine import Generation, Message, Timings, resolve_min_new_tokens

PRE_TOKENIZER = {"qwen2": "qwen2", "llama": "llama-bpe", "gemma2": "default"}
"""What the converter is told about a locally trained byte-level BPE tokenizer, by architecture."""


def version() -> str | None:
    try:
        return importlib.metadata.version("llama-cpp-python")
    except importlib.metadata.PackageNotFoundError:
        return None


def unavailable_reason() -> str | None:
    """None when llama-cpp-python imports; else why the peer cannot run."""
    try:
        import llama_cpp  # noqa: F401
    except Exception as exc:  # ImportError, or a build whose shared library does not load
        return (f"llama-cpp-python is not installed or does not load ({type(exc).__name__}: {exc}); "
                "install the optional extra: pip install 'memlora[peer]' (builds llama.cpp from source, several minutes)")
    return None


def converter_dir() -> Path:
    """Folder with convert_hf_to_gguf.py, convert_lora_to_gguf.py, conversion/ and gguf-py/ of the installed version."""
    env = os.environ.get("MEMLORA_LLAMA_CPP_SRC")
    if env:
        path = Path(env)
    else:
        path = cache_dir("peer") / f"llama.cpp-src-{version()}"
        if not (path / "convert_hf_to_gguf.py").is_file():
            _fetch_converters(path)
    if not (path / "convert_hf_to_gguf.py").is_file() or not (path / "convert_lora_to_gguf.py").is_file():
        raise MemloraError(f"llama.cpp converters not found in {path} (set MEMLORA_LLAMA_CPP_SRC to a llama.cpp checkout)")
    return path


def _fetch_converters(dest: Path) -> None:
    """Download the llama-cpp-python sdist of the installed version with pip and keep its converter scripts."""
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:", "-d", tmp,
               f"llama-cpp-python=={version()}"]
        done = subprocess.run(cmd, capture_output=True, text=True)
        sdists = list(Path(tmp).glob("llama_cpp_python-*.tar.gz"))
        if done.returncode or not sdists:
            raise MemloraError(f"could not fetch the llama-cpp-python sdist for its GGUF converters: {done.stderr.strip()[-300:]}")
        keep = ("convert_hf_to_gguf.py", "convert_lora_to_gguf.py", "conversion/", "gguf-py/", "LICENSE")
        with tarfile.open(sdists[0]) as tar:
            members = []
            for m in tar.getmembers():
                rel = m.name.split("vendor/llama.cpp/", 1)[1] if "vendor/llama.cpp/" in m.name else None
                if rel and any(rel == k or rel.startswith(k) for k in keep) and (m.isfile() or m.isdir()):
                    m.name = rel
                    members.append(m)
            staging = Path(tempfile.mkdtemp(dir=dest.parent))
            tar.extractall(staging, members=members, filter="data")
        os.replace(staging, dest)


def _run_converter(script: str, args: list[str], pre_tokenizer: str, log: Path) -> None:
    """Run a llama.cpp converter in a subprocess, telling it the pre-tokenizer of a locally trained tokenizer."""
    src = converter_dir()
    code = (
        "import runpy, sys\n"
        f"sys.path.insert(0, {str(src)!r}); sys.path.insert(1, {str(src / 'gguf-py')!r})\n"
        "import conversion.base as base\n"
        f"base.TextModel.get_vocab_base_pre = lambda self, tokenizer: {pre_tokenizer!r}\n"
        # a BPE tokenizer.json and no tokenizer.model: go straight to the GPT-2 style vocab (no sentencepiece import)
        "_sp = base.TextModel._set_vocab_sentencepiece\n"
        "def _no_sp(self, *a, **k):\n"
        "    if not (self.dir_model / 'tokenizer.model').is_file():\n"
        "        raise FileNotFoundError('no tokenizer.model')\n"
        "    return _sp(self, *a, **k)\n"
        "base.TextModel._set_vocab_sentencepiece = _no_sp\n"
        f"sys.argv = [{script!r}] + {args!r}\n"
        f"runpy.run_path({str(src / script)!r}, run_name='__main__')\n"
    )
    with open(log, "w") as out:
        done = subprocess.run([sys.executable, "-c", code], stdout=out, stderr=subprocess.STDOUT, env={**os.environ, "NO_LOCAL_GGUF": ""})
    if done.returncode:
        raise MemloraError(f"{script} failed (exit {done.returncode}); log: {log}: {log.read_text()[-500:]}")


@dataclass
class GGUFFiles:
    """The peer's model and expert files."""

    model: Path
    """The base model's GGUF (Q4_0, or the shipped Q4_1)."""
    adapters: dict[str, Path] = field(default_factory=dict)
    """Stage -> f32 GGUF LoRA."""


def ensure_gguf(base_dir: Path, adapters_dir: Path, quant: str = "q4_0") -> GGUFFiles:
    """Convert (once, cached beside the experts) the base to GGUF ``quant`` and every expert to an f32 GGUF LoRA."""
    base_dir, adapters_dir = Path(base_dir), Path(adapters_dir)
    out = adapters_dir.parent / f"gguf-{version()}"
    out.mkdir(parents=True, exist_ok=True)
    model_type = json.loads((base_dir / "config.json").read_text()).get("model_type", "qwen2")
    pre = PRE_TOKENIZER.get(model_type, "default")
    model = out / f"model-{quant}.gguf"
    if not model.is_file():
        f16 = out / "model-f16.gguf"
        if not f16.is_file():
            _run_converter("convert_hf_to_gguf.py", [str(base_dir), "--outfile", str(f16) + ".tmp", "--outtype", "f16"], pre,
                           out / "convert_model.log")
            os.replace(str(f16) + ".tmp", f16)
        _quantize(f16, model, quant)
        f16.unlink()
    return GGUFFiles(model, _convert_adapters(base_dir, adapters_dir, out, pre))


def _quantize(source: Path, target: Path, quant: str, allow_requantize: bool = False) -> None:
    import llama_cpp

    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = getattr(llama_cpp, f"LLAMA_FTYPE_MOSTLY_{quant.upper()}")
    params.nthread = min(2, os.cpu_count() or 1)
    params.allow_requantize = allow_requantize
    tmp = str(target) + ".tmp"
    if llama_cpp.llama_model_quantize(str(source).encode(), tmp.encode(), params) != 0:
        raise MemloraError(f"llama.cpp could not quantize {source} to {quant}")
    os.replace(tmp, target)


def _convert_adapters(base_dir: Path, adapters_dir: Path, out: Path, pre: str) -> dict[str, Path]:
    """Every peft expert under ``adapters_dir`` as an f32 GGUF LoRA in ``out`` (converted once)."""
    adapters = {}
    for stage_dir in sorted(p for p in adapters_dir.iterdir() if (p / "adapter_config.json").is_file()):
        target = out / f"lora-{stage_dir.name}-f32.gguf"
        if not target.is_file():
            _run_converter("convert_lora_to_gguf.py", [str(stage_dir), "--base", str(base_dir), "--outfile", str(target) + ".tmp",
                                                       "--outtype", "f32"], pre, out / f"convert_{stage_dir.name}.log")
            os.replace(str(target) + ".tmp", target)
        adapters[stage_dir.name] = target
    return adapters


def ensure_gguf_from_source(source_gguf: Path, base_dir: Path, adapters_dir: Path, out: Path,
                            requant: tuple[str, ...] = ("q4_0",)) -> dict[str, GGUFFiles]:
    """The shipped GGUF as is (key ``shipped``) and requantized to each of ``requant`` from the same weights, each with the
    experts as f32 GGUF LoRA; converted once into ``out``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    model_type = json.loads((Path(base_dir) / "config.json").read_text()).get("model_type", "llama")
    adapters = _convert_adapters(Path(base_dir), Path(adapters_dir), out, PRE_TOKENIZER.get(model_type, "default"))
    files = {"shipped": GGUFFiles(Path(source_gguf), adapters)}
    for quant in requant:
        model = out / f"{Path(source_gguf).stem}-requant-{quant}.gguf"
        if not model.is_file():
            _quantize(Path(source_gguf), model, quant, allow_requantize=True)
        files[quant] = GGUFFiles(model, adapters)
    return files


_LOG_CALLBACK = None


def _silence_llama_logs(llama_cpp) -> None:
    """Route llama.cpp's own log lines (adapter loading, buffer fallbacks) to nowhere; errors still raise."""
    global _LOG_CALLBACK
    if _LOG_CALLBACK is None:
        _LOG_CALLBACK = llama_cpp.llama_log_callback(lambda level, text, user_data: None)
        llama_cpp.llama_log_set(_LOG_CALLBACK, ctypes.c_void_p(0))


def extra_buffers_usable(system_info: str | None = None) -> bool:
    """Whether llama.cpp may put weights in its extra CPU buffers (AMX, repacked): not when its build carries the AMX
    kernels, which its ``system_info`` line (default: the installed library's) reports as ``AMX_INT8 = 1`` (see the
    module doc)."""
    if system_info is None:
        import llama_cpp

        system_info = llama_cpp.llama_print_system_info().decode(errors="replace")
    return "AMX_INT8 = 1" not in system_info


@contextmanager
def _model_params(llama_cpp, use_extra_bufts: bool):
    """``llama_cpp.Llama`` with ``use_extra_bufts`` set (its constructor takes no such argument: it reads the library's
    default model parameters, which this wraps for the duration)."""
    lib = llama_cpp.llama_cpp
    default = lib.llama_model_default_params

    def params():
        p = default()
        p.use_extra_bufts = use_extra_bufts
        return p

    lib.llama_model_default_params = params
    try:
        yield
    finally:
        lib.llama_model_default_params = default


class LlamaCppEngine:
    """Greedy generation with llama.cpp; one GGUF LoRA per expert, the KV cache cleared on every call."""

    supports_images = False

    def __init__(self, files: GGUFFiles, model_dir: Path, threads: int | None = None, min_new_tokens: int = 0,
                 n_ctx: int = 4096, extra_buffers: bool | None = None):
        """``extra_buffers``: let llama.cpp use its AMX and repacked weight layouts (None: where
        ``extra_buffers_usable``)."""
        import llama_cpp
        from tokenizers import Tokenizer

        self._lib = llama_cpp
        _silence_llama_logs(llama_cpp)
        threads = threads or min(2, os.cpu_count() or 1)
        self.extra_buffers = extra_buffers_usable() if extra_buffers is None else bool(extra_buffers)
        with _model_params(llama_cpp, self.extra_buffers):
            self.llm = llama_cpp.Llama(model_path=str(files.model), n_ctx=n_ctx, n_batch=512, n_threads=threads,
                                       n_threads_batch=threads, logits_all=False, verbose=False)
        self.min_new_tokens = int(min_new_tokens)
        self.chat_template = ChatTemplate.from_model_dir(model_dir)
        self.tokenizer = Tokenizer.from_file(str(Path(model_dir) / "tokenizer.json"))  # same ids as the other engines
        self.eos_ids = {int(self.llm.token_eos())}
        generation_config = Path(model_dir) / "generation_config.json"
        if generation_config.is_file():
            eos = json.loads(generation_config.read_text()).get("eos_token_id")
            self.eos_ids |= {int(e) for e in (eos if isinstance(eos, list) else [eos]) if e is not None}
        self._adapters = {}
        for stage, path in files.adapters.items():
            adapter = llama_cpp.llama_adapter_lora_init(self.llm.model, str(path).encode())
            if not adapter:
                raise AdapterError(f"llama.cpp could not load the LoRA {path}")
            self._adapters[stage] = adapter
        self.adapters = tuple(self._adapters)
        self.active: str | None = None

    def count_tokens(self, text: str) -> int:
        return len(self.tokenizer.encode(text, add_special_tokens=False).ids)

    def _activate(self, adapter: str | None) -> None:
        lib, ctx = self._lib, self.llm.ctx
        if hasattr(lib, "llama_set_adapters_lora"):  # newer API: (ctx, adapters, n, scales), the full set at once
            if adapter is None:
                lib.llama_set_adapters_lora(ctx, None, 0, None)
            else:
                arr = (lib.llama_adapter_lora_p_ctypes * 1)(self._adapters[adapter])
                scales = (ctypes.c_float * 1)(1.0)
                lib.llama_set_adapters_lora(ctx, arr, 1, scales)
        else:
            lib.llama_clear_adapter_lora(ctx)
            if adapter is not None:
                lib.llama_set_adapter_lora(ctx, self._adapters[adapter], 1.0)
        self.active = adapter

    def generate(self, messages: list[Message], adapter: str | None = None, images: Sequence[Any] | None = None,
                 max_new_tokens: int = 128, **options: Any) -> Generation:
        import numpy as np

        if images:
            raise ImageError("the llama.cpp peer is text-only")
        if adapter is not None and adapter not in self._adapters:
            raise AdapterError(f"unknown adapter {adapter!r}; the peer has {list(self._adapters)}")
        min_new = min(resolve_min_new_tokens(options, self.min_new_tokens), max_new_tokens)
        start = time.perf_counter()
        ids = self.tokenizer.encode(self.chat_template.render(messages), add_special_tokens=False).ids
        switch_start = time.perf_counter()
        if adapter != self.active:
            self._activate(adapter)
        self.llm.reset()  # n_tokens = 0: the next eval removes every cached position (KV cleared)
        switch_s = time.perf_counter() - switch_start
        generated: list[int] = []
        prefill_s = decode_s = 0.0
        eos = sorted(self.eos_ids)
        step = time.perf_counter()
        self.llm.eval(ids)
        n_vocab = self.llm.n_vocab()
        while len(generated) < max_new_tokens:
            logits = np.ctypeslib.as_array(self._lib.llama_get_logits_ith(self.llm.ctx, -1), shape=(n_vocab,)).copy()
            if len(generated) < min_new:
                logits[eos] = -np.inf
            token = int(np.argmax(logits))
            generated.append(token)
            now = time.perf_counter()
            if len(generated) == 1:
                prefill_s = now - step
            else:
                decode_s += now - step
            if token in self.eos_ids or len(generated) >= max_new_tokens:
                break
            step = time.perf_counter()
            self.llm.eval([token])
        text_ids = generated[:-1] if generated and generated[-1] in self.eos_ids else generated
        text = self.tokenizer.decode(text_ids, skip_special_tokens=True)
        return Generation(text=text, prompt_tokens=len(ids), completion_tokens=len(generated),
                          timings=Timings(prefill_s, decode_s, switch_s, time.perf_counter() - start), token_ids=generated)

    def close(self) -> None:
        self.llm.close() if hasattr(self.llm, "close") else None
