"""Turn a GGUF file into a Hugging Face model folder the rest of the toolchain reads like any checkpoint.

transformers reads GGUF files of the architectures it knows (llama, qwen2, gemma2, ...) and de-quantizes them to fp32;
``convert_gguf`` checks the file first (magic, architecture, free space), then loads model and tokenizer with
``from_pretrained(dir, gguf_file=...)`` and saves them as config.json + model.safetensors + tokenizer files +
chat_template.jinja, plus a short ``README.md`` card saying where the weights came from. The folder is written to a
temporary directory beside the target and renamed into place, so an interrupted conversion leaves nothing half-done.

    convert_gguf("SmolLM2-135M-Instruct.Q4_1.gguf", "smollm2")     # -> Path("smollm2")
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from memlora.errors import MemloraError
from memlora.runtime.bundle import sha256_file

GGUF_MAGIC = b"GGUF"
SOURCE_FILE = "memlora-source.json"
"""Written last into a converted folder: where the weights came from (file, sha256, licence, architecture)."""
PARITY_PROMPT = "What is the capital of France?"
"""The user message both models see in the conversion check (rendered with the model's chat template)."""
PARITY_MAX_ABS_DIFF = 1e-5
"""A converted folder whose logits differ from the GGUF-loaded model's by more than this is refused."""
SPACE_MARGIN = 1.15
"""Free space asked for beyond the fp32 safetensors (tokenizer, config, temporary files)."""


@dataclass
class GGUFInfo:
    """What the GGUF header says, read without loading the weights."""

    architecture: str
    """``general.architecture`` as GGUF spells it (``llama``, ``qwen2``, ``gemma2``, ...)."""
    parameters: int
    """Total number of weights over all tensors."""
    name: str | None = None
    """``general.name`` when present."""

    @property
    def fp32_bytes(self) -> int:
        return 4 * self.parameters


def _field_text(reader, key: str) -> str | None:
    field = reader.fields.get(key)
    if field is None or not field.data:
        return None
    return bytes(field.parts[field.data[0]]).decode("utf-8", errors="replace")


def read_gguf_info(path: str | Path) -> GGUFInfo:
    """The architecture and size of a GGUF file; ``MemloraError`` when it is not one."""
    path = Path(path)
    if not path.is_file():
        raise MemloraError(f"no GGUF file at {path}")
    with open(path, "rb") as handle:
        if handle.read(4) != GGUF_MAGIC:
            raise MemloraError(f"{path} is not a GGUF file (it does not start with the GGUF magic bytes)")
    import gguf  # the GGUF reader: only converting needs it

    try:
        reader = gguf.GGUFReader(str(path))
    except (ValueError, OSError, IndexError, KeyError) as exc:
        raise MemloraError(f"{path} is not a readable GGUF file: {exc}") from exc
    architecture = _field_text(reader, "general.architecture")
    if not architecture:
        raise MemloraError(f"{path} has no general.architecture: not a model GGUF")
    parameters = sum(int(t.n_elements) for t in reader.tensors)
    return GGUFInfo(architecture=architecture, parameters=parameters, name=_field_text(reader, "general.name"))


def supported_architectures() -> list[str]:
    """The GGUF architectures this transformers reads (its ``GGUF_SUPPORTED_ARCHITECTURES``, metadata sections removed)."""
    from transformers.modeling_gguf_pytorch_utils import GGUF_SUPPORTED_ARCHITECTURES  # heavy: only when converting

    return sorted(a for a in GGUF_SUPPORTED_ARCHITECTURES if a not in ("general", "tokenizer"))


def check_architecture(info: GGUFInfo, path: Path) -> None:
    supported = supported_architectures()
    # transformers maps GGUF's "qwen2moe"/"qwen3moe" spelling onto its "qwen2_moe"/"qwen3_moe"
    if info.architecture not in supported and info.architecture.replace("moe", "_moe") not in supported:
        raise MemloraError(f"{path}: GGUF architecture {info.architecture!r} is not one transformers can read "
                           f"(supported: {', '.join(supported)})")


def check_space(directory: Path, needed: int) -> None:
    free = shutil.disk_usage(directory).free
    if free < needed:
        raise MemloraError(f"not enough disk space in {directory}: converting needs about {needed / 1e9:.2f} GB, "
                           f"{free / 1e9:.2f} GB free")


def card_text(info: GGUFInfo, source: dict) -> str:
    lines = [f"# {info.name or info.architecture}", "",
             (f"Converted by memlora from the GGUF file `{source.get('gguf')}` ({info.architecture}, "
              f"{info.parameters / 1e6:.1f}M parameters), de-quantized to fp32 by transformers.")]
    if source.get("origin"):
        lines += ["", f"Origin: {source['origin']}"]
    if source.get("license"):
        lines += ["", f"Licence: {source['license']}"]
    return "\n".join(lines) + "\n"


def convert_gguf(gguf: str | Path, out_dir: str | Path, source: dict | None = None, force: bool = False) -> Path:
    """Convert ``gguf`` into a Hugging Face folder at ``out_dir`` (config, fp32 safetensors, tokenizer, chat template,
    card). ``source``: extra facts for the card and ``memlora-source.json`` (``origin``, ``license``, ...). Refuses an
    existing ``out_dir`` unless ``force``; nothing is written when a check fails."""
    gguf, out_dir = Path(gguf).resolve(), Path(out_dir)
    info = read_gguf_info(gguf)
    check_architecture(info, gguf)
    if out_dir.exists() and not force:
        raise MemloraError(f"{out_dir} exists (pass --force to replace it)")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    check_space(out_dir.parent, int(info.fp32_bytes * SPACE_MARGIN))

    facts = {"gguf": gguf.name, "gguf_sha256": sha256_file(gguf), "architecture": info.architecture,
             "parameters": info.parameters, **(source or {})}
    tmp = Path(tempfile.mkdtemp(prefix=f".converting-{out_dir.name}-", dir=out_dir.parent))
    try:
        os.chmod(tmp, 0o755)  # mkdtemp makes it private; the finished folder is an ordinary one
        facts["parity_max_abs_diff"] = _convert_into(gguf, tmp)
        (tmp / "README.md").write_text(card_text(info, facts), encoding="utf-8")
        (tmp / SOURCE_FILE).write_text(json.dumps(facts, indent=2) + "\n", encoding="utf-8")
        if out_dir.exists():
            shutil.rmtree(out_dir)
        os.rename(tmp, out_dir)
    except OSError as exc:
        if exc.errno == errno.ENOSPC:
            raise MemloraError(f"ran out of disk space writing {out_dir}") from exc
        raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return out_dir


def load_gguf_model(gguf: str | Path):
    """(model, tokenizer) straight from the GGUF file, as transformers loads it (fp32, the reference of the conversion)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer  # heavy: only when converting

    gguf = Path(gguf).resolve()
    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    return model.eval(), tokenizer


def _convert_into(gguf: Path, out: Path) -> float:
    """Save the GGUF as a Hugging Face folder in ``out``, reload it and return the max abs logit difference to the
    GGUF-loaded model on ``PARITY_PROMPT`` (``MemloraError`` above ``PARITY_MAX_ABS_DIFF``)."""
    import torch  # heavy: only when converting
    from transformers import AutoModelForCausalLM

    model, tokenizer = load_gguf_model(gguf)
    # a GGUF-loaded model carries a quantizer marker that save_pretrained refuses; its weights are plain fp32 already
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(str(out))
    tokenizer.save_pretrained(str(out))
    if not (out / "chat_template.jinja").is_file() and not getattr(tokenizer, "chat_template", None):
        raise MemloraError(f"{gguf} has no chat template (tokenizer.chat_template): memlora prompts need one")
    text = tokenizer.apply_chat_template([{"role": "user", "content": PARITY_PROMPT}], tokenize=False,
                                         add_generation_prompt=True)
    ids = tokenizer(text, add_special_tokens=False, return_tensors="pt")["input_ids"]
    saved = AutoModelForCausalLM.from_pretrained(str(out), dtype=torch.float32).eval()
    with torch.no_grad():
        diff = float((model(input_ids=ids).logits - saved(input_ids=ids).logits).abs().max())
    if not diff <= PARITY_MAX_ABS_DIFF:
        raise MemloraError(f"the converted {gguf.name} computes different logits from the GGUF itself (max abs diff "
                           f"{diff:.3g} > {PARITY_MAX_ABS_DIFF}): this transformers version does not convert it faithfully")
    return diff
