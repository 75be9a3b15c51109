"""BERTScore-F1 implemented with transformers, following bert-score 0.3.13 (what Mem0's ``bert_score(..., lang="en")`` runs).

Why not the ``bert-score`` package: it pulls pandas and requests and targets transformers 3/4; the algorithm is short:
1. Encode each sentence with special tokens (RoBERTa: ``add_prefix_space=True``), run the model, take hidden layer
   ``num_layers`` (17 for roberta-large, bert-score's default for ``lang="en"``), L2-normalise each token vector.
2. Cosine matrix between candidate and reference tokens (padding masked to 0); precision = mean over candidate tokens of
   their best match, recall = mean over reference tokens of theirs. Token weights are 1 ("no idf"), except the special
   start/end tokens, weighted 0 (they still take part in the max, as in bert-score).
3. F1 = 2PR/(P+R) (NaN -> 0). No baseline rescaling (Mem0 does not rescale).

Only a local model path is accepted: roberta-large cannot be downloaded here, and substituting another model under the same
name would make the numbers incomparable.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from memlora.errors import MetricUnavailable

PREFIX_SPACE_TYPES = ("roberta", "xlm-roberta", "bart", "longformer", "gpt2", "deberta")


class BertScore:
    """BERTScore-F1 of (candidate, reference) pairs with a local encoder checkpoint (roberta-large for the paper's numbers)."""

    def __init__(self, model_path: str | Path, num_layers: int = 17, batch_size: int = 16, device: str = "cpu"):
        import torch
        from transformers import AutoConfig, AutoModel, AutoTokenizer

        path = Path(model_path)
        if not (path / "config.json").is_file():
            raise MetricUnavailable(f"BERTScore unavailable: {path} is not a local model directory (no config.json)")
        config = AutoConfig.from_pretrained(path)
        if not 0 < num_layers <= config.num_hidden_layers:
            raise MetricUnavailable(f"BERTScore: layer {num_layers} outside 1..{config.num_hidden_layers} of {path}")
        kwargs = {"add_prefix_space": True} if config.model_type in PREFIX_SPACE_TYPES else {}
        self.tokenizer = AutoTokenizer.from_pretrained(path, **kwargs)
        self.model = AutoModel.from_pretrained(path).to(device).eval()
        self.num_layers, self.batch_size, self.device = num_layers, batch_size, device
        self.model_path = str(path)
        self._torch = torch

    def _embed(self, texts: list[str]):
        torch = self._torch
        enc = self.tokenizer(
            [t.strip() for t in texts], padding=True, truncation=True, return_tensors="pt", return_special_tokens_mask=True
        )
        special = enc.pop("special_tokens_mask")
        enc = {k: v.to(self.device) for k, v in enc.items()}
        with torch.no_grad():
            out = self.model(**enc, output_hidden_states=True)
        emb = out.hidden_states[self.num_layers]
        emb = emb / emb.norm(dim=-1, keepdim=True).clamp_min(1e-12)
        mask = enc["attention_mask"].float()
        weight = mask * (1 - special.float().to(self.device))  # idf 1, special tokens 0
        return emb, mask, weight

    def f1(self, candidates: Sequence, references: Sequence) -> list[float]:
        """BERTScore-F1 per pair; an empty candidate or reference scores 0."""
        torch = self._torch
        if len(candidates) != len(references):
            raise ValueError("candidates and references differ in length")
        cands = ["" if c is None else str(c).strip() for c in candidates]
        refs = ["" if r is None else str(r).strip() for r in references]
        out = [0.0] * len(cands)
        keep = [i for i in range(len(cands)) if cands[i] and refs[i]]
        for start in range(0, len(keep), self.batch_size):
            idx = keep[start : start + self.batch_size]
            h, hm, hw = self._embed([cands[i] for i in idx])
            r, rm, rw = self._embed([refs[i] for i in idx])
            sim = torch.bmm(h, r.transpose(1, 2)) * torch.bmm(hm.unsqueeze(2), rm.unsqueeze(1))
            precision = (sim.max(dim=2).values * hw / hw.sum(dim=1, keepdim=True)).sum(dim=1)
            recall = (sim.max(dim=1).values * rw / rw.sum(dim=1, keepdim=True)).sum(dim=1)
            f = 2 * precision * recall / (precision + recall)
            f = torch.nan_to_num(f, nan=0.0)
            for i, value in zip(idx, f.tolist()):
                out[i] = float(value)
        return out
