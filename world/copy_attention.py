"""Copy-attention supervision: an auxiliary loss that teaches one attention head WHERE to copy from.

Most of what the memory experts write is copied from their prompt: the value a fact is about ("Lives in Paris" from
"I moved to Paris"), the facts and ids of the update JSON, the answer found in a memory line. A small student trained
only on the next-token loss sits for thousands of steps on the plateau where it emits the training set's most frequent
value of the right kind: to copy, an attention head has to find the value AND its output has to carry the value's
identity, and neither gets a useful gradient before the other exists (README, world section). When the target token
also occurs in the prompt, the data say where to look, so we say it to the model: for every target token found in the
prompt, the attention probability that the chosen head(s), at the position predicting that token, puts on the token's
occurrence(s) in the prompt is pushed up (``-log`` of that mass, averaged). Pointer networks and pointer-generator
summarisers learn the same alignment; here it only shapes an ordinary attention head of the student, so the trained
adapter is a plain LoRA adapter (nothing changes at inference or in the export).

Alignment (``copy_pointers``): a target token that continues a copied run (the prompt token right after the previous
target token's single source) points at that one position; otherwise at every occurrence of the token in the prompt.

A Yes/No answer copies nothing, yet it is a lookup too: "Does Anna play chess?" is Yes when " chess" occurs among the
memories. The yes/no pointer (``yes_no_pointers``, ``yes_no_attention_loss``) says how to look it up, in two steps
and two layers below the copy head: at the position predicting the answer, a head of the ``read`` layer attends to
the word asked about (the question's last word, before its "?"), and the same head of the ``find`` layer to that
word's earlier occurrences in the prompt for Yes, or to position 0 (the attention sink: nothing found) for No. Both
heads' outputs stay free for the next layers to turn into Yes or No (docs/world.md).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

from memlora.errors import MemloraError

__all__ = ["copy_pointers", "copy_attention_loss", "YesNoTokens", "yes_no_pointers", "yes_no_attention_loss",
           "CopyAttentionLoss"]


def copy_pointers(input_ids: Sequence[int], labels: Sequence[int]) -> list[tuple[int, list[int]]]:
    """``[(t, sources)]`` for one encoded example: the target token at position ``t`` (predicted at ``t - 1``) occurs in
    the prompt at ``sources``. Target tokens absent from the prompt are left out. The prompt is every position whose
    label is -100 before the first labelled one."""
    n_prompt = next((i for i, label in enumerate(labels) if label != -100), len(labels))
    prompt = list(input_ids[:n_prompt])
    where: dict[int, list[int]] = {}
    for position, token in enumerate(prompt):
        where.setdefault(int(token), []).append(position)
    pointers: list[tuple[int, list[int]]] = []
    previous: int | None = None  # the single source of the previous target token, when it had one
    for t in range(n_prompt, len(labels)):
        token = int(labels[t])
        if token == -100:
            previous = None
            continue
        if previous is not None and previous + 1 < n_prompt and prompt[previous + 1] == token:
            sources = [previous + 1]
        else:
            sources = where.get(token, [])
        if sources:
            pointers.append((t, sources))
        previous = sources[0] if len(sources) == 1 else None
    return pointers


def copy_attention_loss(attentions, input_ids, labels, layer: int = -1, heads: Sequence[int] = (0,)):
    """Mean ``-log`` attention mass that ``heads`` of ``layer`` put on the prompt occurrences of each target token.

    ``attentions``: the model's ``output_attentions`` (one ``[batch, heads, query, key]`` tensor per layer; eager
    attention). ``input_ids`` / ``labels``: the batch (``[batch, length]``, labels -100 on the prompt and padding).
    Returns a scalar tensor (0 when no target token occurs in any prompt)."""
    import torch

    weights = attentions[layer]
    n_heads = weights.shape[1]
    bad = [h for h in heads if not -n_heads <= h < n_heads]
    if bad:
        raise ValueError(f"copy-attention heads {bad} do not exist: layer {layer} has {n_heads} heads")
    rows, head_of, queries, keys, groups = [], [], [], [], []
    n_groups = 0  # one group per (target token, head): its attention mass over the token's sources
    for b in range(input_ids.shape[0]):
        for t, sources in copy_pointers(input_ids[b].tolist(), labels[b].tolist()):
            for h in heads:
                rows += [b] * len(sources)
                head_of += [h] * len(sources)
                queries += [t - 1] * len(sources)
                keys += sources
                groups += [n_groups] * len(sources)
                n_groups += 1
    if not n_groups:
        return weights.new_zeros(())
    index = [torch.tensor(x, device=weights.device) for x in (rows, head_of, queries, keys, groups)]
    picked = weights[index[0], index[1], index[2], index[3]]
    mass = torch.zeros(n_groups, dtype=picked.dtype, device=weights.device).index_add_(0, index[4], picked)
    return -torch.log(mass.clamp_min(1e-6)).mean()


@dataclass(frozen=True)
class YesNoTokens:
    """The token ids the yes/no pointer recognises: the first token of a Yes and of a No target, and the "?"."""

    yes: int
    no: int
    mark: int

    @classmethod
    def of(cls, tokenizer, lead_space: bool = False) -> "YesNoTokens":
        """The ids in ``tokenizer``, for targets encoded with a leading space or not (``train_expert``'s ``lead_space``)."""
        space = " " if lead_space else ""
        yes, no, mark = (tokenizer.encode(text, add_special_tokens=False) for text in (space + "Yes", space + "No", "?"))
        if len(mark) != 1:
            raise ValueError(f'the yes/no pointer needs "?" to be one token; this tokenizer makes it {mark}')
        return cls(yes[0], no[0], mark[0])


def yes_no_pointers(input_ids: Sequence[int], labels: Sequence[int], tokens: YesNoTokens) -> tuple[int, int, list[int]] | None:
    """``(query, asked, found)`` for one encoded example whose target starts with Yes or No (else None): the position
    predicting the answer's first token, the position of the word asked about (the token before the prompt's last "?")
    and where the answer says that word is: its earlier occurrences in the prompt for Yes (empty if there are none), ``[0]``
    for No. None too when the prompt has no "?"."""
    n_prompt = next((i for i, label in enumerate(labels) if label != -100), len(labels))
    if n_prompt >= len(labels) or labels[n_prompt] not in (tokens.yes, tokens.no) or n_prompt < 2:
        return None
    marks = [i for i in range(1, n_prompt) if input_ids[i] == tokens.mark]
    if not marks:
        return None
    asked = marks[-1] - 1
    if labels[n_prompt] == tokens.no:
        return n_prompt - 1, asked, [0]
    return n_prompt - 1, asked, [i for i in range(asked) if input_ids[i] == input_ids[asked]]


def yes_no_attention_loss(attentions, input_ids, labels, tokens: YesNoTokens, read_layer: int = 1, find_layer: int = 2,
                          head: int = 3):
    """Mean ``-log`` attention of ``head`` at each Yes/No example's answer position: in ``read_layer`` on the word asked
    about, in ``find_layer`` on where the answer says it is (a Yes without an earlier occurrence only reads). Arguments
    as ``copy_attention_loss``; 0 when the batch has no Yes/No example."""
    import torch

    bad = [layer for layer in (read_layer, find_layer) if not -len(attentions) <= layer < len(attentions)]
    if bad:
        raise ValueError(f"yes/no pointer layers {bad} do not exist: the model has {len(attentions)} layers")
    n_heads = attentions[read_layer].shape[1]
    if not -n_heads <= head < n_heads:
        raise ValueError(f"yes/no pointer head {head} does not exist: the layers have {n_heads} heads")
    terms = []
    for b in range(input_ids.shape[0]):
        pointer = yes_no_pointers(input_ids[b].tolist(), labels[b].tolist(), tokens)
        if pointer is None:
            continue
        query, asked, found = pointer
        terms.append(-torch.log(attentions[read_layer][b, head, query, asked].clamp_min(1e-6)))
        if found:
            terms.append(-torch.log(attentions[find_layer][b, head, query, found].sum().clamp_min(1e-6)))
    return torch.stack(terms).mean() if terms else attentions[0].new_zeros(())


@dataclass
class CopyAttentionLoss:
    """The copy-attention loss (with the yes/no pointer inside it) as ``train_expert``'s auxiliary loss
    (``memlora.distill.train.AuxiliaryLoss``): ``loss = out.loss + copy_attention * (copy + yes_no_pointer * yes/no)``."""

    copy_attention: float = 1.0
    """Weight of the copy-attention loss: teaches a head where target tokens sit in the prompt."""
    copy_attention_layer: int = -1
    """Layer whose heads the copy-attention loss supervises (negative: from the last)."""
    copy_attention_heads: tuple[int, ...] = (0,)
    """Query heads of that layer the copy-attention loss supervises."""
    yes_no_pointer: float = 0.0
    """Weight, inside the copy-attention loss, of the yes/no pointer (``yes_no_attention_loss``): teaches two heads to
    look up the word a Yes/No question asks about; 0 = off."""
    yes_no_pointer_layers: tuple[int, int] = (1, 2)
    """The yes/no pointer's read layer (attends to the word asked) and find layer (to where it occurs, or the sink)."""
    yes_no_pointer_head: int = 3
    """The query head the yes/no pointer supervises in both layers (not the copy head)."""
    lead_space: bool = False
    """Targets are encoded with a leading space (the yes/no pointer reads " Yes" / " No" then)."""
    attn_implementation: str | None = field(default="eager", init=False)
    """The loss reads attention probabilities, which only the eager implementation returns."""
    forward_kwargs: dict = field(default_factory=lambda: {"output_attentions": True}, init=False)
    tokens: YesNoTokens | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        if self.copy_attention <= 0 or not self.copy_attention_heads:
            raise MemloraError("copy_attention must be > 0 and name at least one head (leave the loss out to switch it off)")
        self.copy_attention_heads = tuple(int(h) for h in self.copy_attention_heads)
        if self.yes_no_pointer < 0:
            raise MemloraError("yes_no_pointer must be >= 0")
        if len(self.yes_no_pointer_layers) != 2:
            raise MemloraError("yes_no_pointer_layers names two layers: read, find")
        self.yes_no_pointer_layers = tuple(int(layer) for layer in self.yes_no_pointer_layers)

    @property
    def weight(self) -> float:
        return self.copy_attention

    def prepare(self, tokenizer, model_config) -> None:
        """The yes/no pointer's token ids, after checking that its layers and head exist in the model (before training)."""
        if not self.yes_no_pointer:
            return
        layers, heads = model_config.num_hidden_layers, model_config.num_attention_heads
        bad = [layer for layer in self.yes_no_pointer_layers if not -layers <= layer < layers]
        if bad or not -heads <= self.yes_no_pointer_head < heads:
            raise MemloraError(f"the yes/no pointer's layers {list(self.yes_no_pointer_layers)} / head "
                               f"{self.yes_no_pointer_head} do not all exist in a model of {layers} layers x {heads} heads")
        try:
            self.tokens = YesNoTokens.of(tokenizer, self.lead_space)
        except ValueError as e:
            raise MemloraError(str(e)) from None

    def __call__(self, outputs, batch: dict):
        loss = copy_attention_loss(outputs.attentions, batch["input_ids"], batch["labels"], self.copy_attention_layer,
                                   self.copy_attention_heads)
        if self.tokens is not None:
            loss = loss + self.yes_no_pointer * yes_no_attention_loss(
                outputs.attentions, batch["input_ids"], batch["labels"], self.tokens, *self.yes_no_pointer_layers,
                self.yes_no_pointer_head)
        return loss

    def hyperparameters(self) -> dict:
        return {"copy_attention": self.copy_attention, "copy_attention_layer": self.copy_attention_layer,
                "copy_attention_heads": list(self.copy_attention_heads), "yes_no_pointer": self.yes_no_pointer,
                "yes_no_pointer_layers": list(self.yes_no_pointer_layers), "yes_no_pointer_head": self.yes_no_pointer_head}
