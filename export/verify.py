"""``verify_bundle``: does the bundle compute what transformers + peft compute?

For the base model and every expert, each prompt of a fixed set is run greedily through ONNX Runtime GenAI (a new Generator
per run, ``set_active_adapter`` before ``append_tokens``), recording the logits of every step. transformers + peft then scores
the same token sequence in one teacher-forced forward pass. Reported per (stage, prompt): the max abs logit difference over all
steps and greedy-token agreement (the share of steps where transformers' argmax is the token ONNX Runtime chose; 1.0 means
both would generate the identical text). fp32 must agree (<= 1e-4 and every token); int4 is reported (its error is the
quantization's). The embedder is compared with the sentence-transformers model it came from (cosine).
"""

from __future__ import annotations

import contextlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from memlora.errors import MemloraError
from memlora.export.adapters import discover_experts
from memlora.export.genai_builder import disable_telemetry
from memlora.runtime.bundle import Bundle, load_bundle
from memlora.runtime.embedder import OnnxEmbedder, SentenceTransformerEmbedder
from memlora.runtime.threads import resolve_threads

DEFAULT_PROMPTS = (
    "Alice: I moved to Lisbon last spring and started learning the guitar.",
    "What did Bob say about his sister's wedding in June?",
    "Existing memories: 0. likes hiking. New facts: moved to Paris; has a dog named Rex.",
)
EMBEDDER_TEXTS = (
    "Alice moved to Lisbon last spring.",
    "Bob's sister got married in June; the wedding was by the sea.",
    "What does Caroline do on weekends?",
    "Café crème, naïve résumé — accents and punctuation!",
    "The meeting was moved to 3 pm on Tuesday, 12 March 2024.",
)


@dataclass
class VerifyConfig:
    """What ``verify_bundle`` checks and how strictly."""

    prompts: tuple[str, ...] = DEFAULT_PROMPTS
    """User messages, each wrapped in the model's chat template."""
    steps: int = 16
    """Greedy steps compared per prompt."""
    fp32_max_abs_diff: float = 1e-4
    """fp32 bundles fail above this max abs logit difference."""
    fp32_min_agreement: float = 1.0
    """fp32 bundles fail below this greedy-token agreement."""
    int4_max_abs_diff: float | None = None
    """int4 bundles fail above this (None = report only)."""
    int4_min_agreement: float | None = None
    """int4 bundles fail below this (None = report only)."""
    embedder_min_cosine: float = 0.9999
    """fp32 embedder: minimum cosine to the source model."""
    embedder_int8_min_cosine: float = 0.98
    """int8 embedder: minimum cosine to the source model."""
    embedder_texts: tuple[str, ...] = EMBEDDER_TEXTS
    embedder_source: Path | None = None
    """The sentence-transformers folder the embedder came from (None = the one the manifest names, if present)."""


@dataclass
class CaseResult:
    stage: str
    """Expert stage, or ``base``."""
    mode: str
    prompt: int
    steps: int
    max_abs_diff: float
    agreement: float
    tokens: list[int]
    ok: bool
    adapter_effect: float | None = None
    """max |expert logits - base logits| at the first step (ONNX Runtime): 0 would mean the expert changes nothing."""


@dataclass
class EmbedderResult:
    int8: bool
    min_cosine: float
    mean_cosine: float
    with_tokenizer_min_cosine: float | None
    ok: bool


@dataclass
class VerifyReport:
    bundle: str
    precision: str
    cases: list[CaseResult] = field(default_factory=list)
    embedder: EmbedderResult | None = None
    tokenizer_match: bool = True
    failures: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failures

    def to_dict(self) -> dict:
        data = asdict(self)
        data["ok"] = self.ok
        summary = {}
        for case in self.cases:
            s = summary.setdefault(case.stage, {"max_abs_diff": 0.0, "min_agreement": 1.0, "steps": 0})
            s["max_abs_diff"] = max(s["max_abs_diff"], case.max_abs_diff)
            s["min_agreement"] = min(s["min_agreement"], case.agreement)
            s["steps"] += case.steps
        data["summary"] = summary
        return data


def chat_ids(tokenizer, prompt: str) -> list[int]:
    """Token ids of one user message in the chat template, with the assistant turn opened."""
    ids = tokenizer.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True, tokenize=True,
                                        return_dict=False)
    if isinstance(ids, dict) or hasattr(ids, "keys"):
        ids = ids["input_ids"]
    return [int(i) for i in ids]


def ort_greedy(model, ids: list[int], steps: int, adapters=None, adapter_name: str | None = None,
               forced: list[int] | None = None) -> tuple[np.ndarray, list[int]]:
    """Greedy decoding on an ``og.Model``: returns the logits of each step [steps, vocab] and the chosen tokens;
    ``forced`` (teacher forcing) feeds those tokens back instead of the chosen ones."""
    import onnxruntime_genai as og

    params = og.GeneratorParams(model)
    params.set_search_options(max_length=len(ids) + steps + 1, do_sample=False)
    generator = og.Generator(model, params)
    if adapter_name is not None:
        generator.set_active_adapter(adapters, adapter_name)  # before append_tokens
    generator.append_tokens(np.asarray([ids], dtype=np.int32))
    logits, tokens = [], []
    for step in range(steps):
        row = np.asarray(generator.get_logits(), dtype=np.float32).reshape(-1)
        logits.append(row)
        tokens.append(int(row.argmax()))
        if step + 1 < steps:
            generator.append_tokens(np.asarray([[forced[step] if forced else tokens[-1]]], dtype=np.int32))
    return np.stack(logits), tokens


def hf_logits(model, ids: list[int], tokens: list[int]) -> np.ndarray:
    """transformers logits for each generation step of ``tokens`` after ``ids`` (teacher-forced) [steps, vocab]."""
    import torch

    sequence = torch.tensor([ids + tokens[:-1]], dtype=torch.long)
    with torch.no_grad():
        out = model(input_ids=sequence).logits[0, len(ids) - 1 :]
    return out.float().numpy()


class Reference:
    """transformers base model with every expert loaded as a named peft adapter (one copy of the weights)."""

    def __init__(self, base_dir: Path, adapters_dir: Path | None, stages: list[str]):
        import torch
        from peft import PeftModel
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(str(base_dir), local_files_only=True)
        self.base = AutoModelForCausalLM.from_pretrained(str(base_dir), dtype=torch.float32, local_files_only=True).eval()
        self.model = self.base
        paths = {spec.stage: spec.path for spec in discover_experts(adapters_dir)} if adapters_dir and stages else {}
        missing = [s for s in stages if s not in paths]
        if missing:
            raise MemloraError(f"the bundle has experts {missing} that {adapters_dir} does not hold: cannot verify them")
        for i, stage in enumerate(stages):
            if i == 0:
                self.model = PeftModel.from_pretrained(self.base, str(paths[stage]), adapter_name=self.name(stage)).eval()
            else:
                self.model.load_adapter(str(paths[stage]), adapter_name=self.name(stage))

    @staticmethod
    def name(stage: str) -> str:
        # peft keeps adapters in ModuleDicts: a stage called "update" would clash with ModuleDict.update
        return f"expert_{stage}".replace(".", "_")

    def logits(self, stage: str | None, ids: list[int], tokens: list[int]) -> np.ndarray:
        if stage is None:
            if self.model is self.base:
                return hf_logits(self.base, ids, tokens)
            with self.model.disable_adapter():
                return hf_logits(self.model, ids, tokens)
        self.model.set_adapter(self.name(stage))
        return hf_logits(self.model, ids, tokens)


def _check_tokenizer(report: VerifyReport, og_model, hf_tokenizer, prompt: str, ids: list[int]) -> None:
    import onnxruntime_genai as og

    text = hf_tokenizer.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True, tokenize=False)
    og_ids = [int(i) for i in og.Tokenizer(og_model).encode(text)]
    if og_ids != ids:
        report.tokenizer_match = False
        report.failures.append("the bundle's tokenizer encodes the chat prompt differently from the Hugging Face tokenizer")


def _og_model(og, model_dir: Path):
    """``og.Model`` with this machine's thread count (the bundle's genai_config names the target device's)."""
    config = og.Config(str(model_dir))
    threads = {"intra_op_num_threads": resolve_threads(None), "inter_op_num_threads": 1}
    config.overlay(json.dumps({"model": {"decoder": {"session_options": threads}}}))
    return og.Model(config)


def verify_models(bundle: Bundle, base_dir: Path, adapters_dir: Path | None, config: VerifyConfig, report: VerifyReport) -> None:
    import onnxruntime_genai as og

    fp32 = bundle.precision == "fp32"
    max_diff = config.fp32_max_abs_diff if fp32 else config.int4_max_abs_diff
    min_agree = config.fp32_min_agreement if fp32 else config.int4_min_agreement
    reference = Reference(base_dir, adapters_dir, list(bundle.experts))
    prompt_ids = [chat_ids(reference.tokenizer, p) for p in config.prompts]

    base_model = _og_model(og, bundle.base_dir)
    _check_tokenizer(report, base_model, reference.tokenizer, config.prompts[0], prompt_ids[0])
    adapters = og.Adapters(base_model)
    for stage, expert in bundle.experts.items():
        if expert.mode == "externalized":
            adapters.load(str(expert.adapter_file), stage)

    runs: list[tuple[str, str, object, str | None]] = [("base", "base", base_model, None)]
    merged_models = {}
    for stage, expert in bundle.experts.items():
        if expert.mode == "externalized":
            runs.append((stage, expert.mode, base_model, stage))
        else:
            merged_models[stage] = _og_model(og, expert.model_dir)
            runs.append((stage, expert.mode, merged_models[stage], None))

    base_first: dict[int, np.ndarray] = {}
    for stage, mode, model, adapter_name in runs:
        for index, ids in enumerate(prompt_ids):
            ort_logits, tokens = ort_greedy(model, ids, config.steps, adapters if adapter_name else None, adapter_name)
            ref = reference.logits(None if stage == "base" else stage, ids, tokens)
            diff = float(np.abs(ref - ort_logits).max())
            agreement = float((ref.argmax(-1) == np.asarray(tokens)).mean())
            ok = (max_diff is None or diff <= max_diff) and (min_agree is None or agreement >= min_agree)
            effect = None
            if stage == "base":
                base_first[index] = ort_logits[0]
            else:
                effect = float(np.abs(ort_logits[0] - base_first[index]).max())
                if effect == 0.0:
                    report.warnings.append(f"{stage} prompt {index}: the expert's logits equal the base model's (untrained adapter?)")
            report.cases.append(CaseResult(stage, mode, index, len(tokens), diff, agreement, tokens, ok, effect))
            if not ok:
                report.failures.append(
                    f"{stage} prompt {index}: max abs logit diff {diff:.3g}, greedy agreement {agreement:.2f} "
                    f"(limits: {max_diff}, {min_agree})"
                )
    del adapters, merged_models


def verify_embedder(bundle: Bundle, config: VerifyConfig, report: VerifyReport) -> None:
    emb = bundle.embedder
    source = config.embedder_source or (bundle.manifest["embedder"].get("source") if bundle.manifest.get("embedder") else None)
    if source is None or not Path(source).is_dir():
        report.failures.append(f"embedder: its source model {source} is not available here; pass --embedder PATH to compare")
        return
    texts = list(config.embedder_texts)
    expected = SentenceTransformerEmbedder(source).encode(texts)
    got = OnnxEmbedder(emb.file, emb.tokenizer_dir).encode(texts)
    cosines = (expected * got).sum(1)
    with_tok = None
    if emb.with_tokenizer_file is not None:
        with_tok = float((expected * _encode_with_tokenizer_graph(emb.with_tokenizer_file, texts)).sum(1).min())
    limit = config.embedder_int8_min_cosine if emb.int8 else config.embedder_min_cosine
    ok = float(cosines.min()) >= limit and (with_tok is None or with_tok >= limit)
    report.embedder = EmbedderResult(emb.int8, float(cosines.min()), float(cosines.mean()), with_tok, ok)
    if not ok:
        report.failures.append(f"embedder: min cosine {cosines.min():.5f} (with tokenizer graph: {with_tok}) below {limit}")


def _encode_with_tokenizer_graph(path: Path, texts: list[str]) -> np.ndarray:
    import onnxruntime as ort
    from onnxruntime_extensions import get_library_path

    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = resolve_threads(None), 1
    options.register_custom_ops_library(get_library_path())
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return np.concatenate([session.run(["sentence_embedding"], {name: np.array([t])})[0] for t in texts])


@contextlib.contextmanager
def _single_torch_thread():
    """One torch thread while ONNX Runtime's spinning pool is alive: the two pools fighting made verification 4x slower."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def verify_bundle(bundle_dir: str | Path, base_dir: str | Path, adapters_dir: str | Path | None,
                  config: VerifyConfig | None = None) -> VerifyReport:
    """Verify checksums, then compare every model/expert with transformers + peft and the embedder with its source."""
    config = config or VerifyConfig()
    disable_telemetry()
    bundle = load_bundle(bundle_dir, verify=True)
    report = VerifyReport(bundle=str(bundle_dir), precision=bundle.precision)
    with _single_torch_thread():
        verify_models(bundle, Path(base_dir), Path(adapters_dir) if adapters_dir else None, config, report)
    if bundle.embedder is not None:
        verify_embedder(bundle, config, report)
    return report


def write_report(report: VerifyReport, path: str | Path) -> Path:
    path = Path(path)
    path.write_text(json.dumps(report.to_dict(), indent=2) + "\n")
    return path
