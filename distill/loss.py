"""The completion-only next-token loss, with the LM head run on the target positions only.

A causal LM's head maps every position's hidden state to vocabulary logits (SmolLM2: 49,152 per token), but an
expert's loss only reads the completion positions. ``causal_lm_loss`` runs the decoder, keeps the hidden states whose
next token is a target (label != -100) and applies the head to those alone: the same mean cross-entropy as
``model(**batch).loss``, without the logits of the prompt.
"""

from __future__ import annotations

from typing import Any

__all__ = ["causal_lm_loss", "masked_loss_sum", "target_only_supported"]

_LOGIT_TRANSFORMS = ("final_logit_softcapping", "logit_scale", "logits_scaling")
"""Config fields of models whose forward changes the head's logits (soft-capping, scaling): those keep the full path."""


def _causal_lm(model):
    """The transformers ``*ForCausalLM`` inside a peft model (or the model itself)."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def target_only_supported(model) -> bool:
    """Whether ``model``'s logits are exactly ``lm_head(decoder(...).last_hidden_state)`` (text-only causal LMs)."""
    import torch

    lm = _causal_lm(model)
    config = getattr(lm, "config", None)
    if config is None or not type(lm).__name__.endswith("ForCausalLM"):
        return False
    if any(getattr(config, name, None) not in (None, 1, 1.0) for name in _LOGIT_TRANSFORMS):
        return False
    try:
        decoder, head = lm.get_decoder(), lm.get_output_embeddings()
    except (AttributeError, NotImplementedError):
        return False
    return decoder is not None and isinstance(head, torch.nn.Linear)


def _target_logits(model, batch: dict):
    """(logits of the target positions [n, vocab] in fp32, their labels [n])."""
    lm = _causal_lm(model)
    hidden = lm.get_decoder()(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
    labels = batch["labels"][:, 1:]
    keep = labels != -100
    logits = lm.get_output_embeddings()(hidden[:, :-1][keep])
    return logits.float(), labels[keep]


def causal_lm_loss(model, batch: dict, target_only: bool) -> tuple[Any, Any]:
    """(mean completion-token cross-entropy, the forward's outputs or None): the head on the target positions only
    when ``target_only`` (outputs then None), else the model's own forward and loss."""
    import torch

    if not target_only:
        out = model(**batch)
        return out.loss, out
    logits, labels = _target_logits(model, batch)
    return torch.nn.functional.cross_entropy(logits, labels), None


def masked_loss_sum(model, batch: dict, target_only: bool) -> tuple[Any, int]:
    """(summed completion-token cross-entropy, number of those tokens) of one batch, for validation."""
    import torch

    if target_only:
        logits, labels = _target_logits(model, batch)
    else:
        full = model(**{k: v for k, v in batch.items() if k != "labels"}).logits[:, :-1].float()
        labels = batch["labels"][:, 1:]
        logits, labels = full.reshape(-1, full.size(-1)), labels.reshape(-1)
    loss = torch.nn.functional.cross_entropy(logits, labels, ignore_index=-100, reduction="sum")
    return loss, int((labels != -100).sum())
