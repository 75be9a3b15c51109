"""Learning test: experts trained on LoCoMo observation targets (train split) learn their output format on a PRETRAINED
tiny model, and their validation loss falls by at least half.

The base is the ``pretrained_tiny_lm`` fixture: the ``tiny`` qwen2 (64 hidden, 2 layers) pretrained from scratch on the
synthetic world's raw conversations (language modelling only, world tokenizer; never-seen tokens such as the memory
operations' JSON initialised from the seen ones), as a real user's small pretrained LM would be. Prompted with the
memory operations it answers chat text (0% valid). The data are LoCoMo's observations replayed through the real loop
(``memlora.distill.observations``): extraction = the facts of each message pair (``{"facts": []}`` when it states
none), update = ADD of those facts against the retrieved memories; train on conv-26..47, validate on conv-48.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import pytest

from memlora.corpus.locomo import load_locomo, split_conversations
from memlora.distill.observations import ObservationConfig, observation_examples
from memlora.distill.train import TrainConfig, encode_example, load_tokenizer, train_expert

KEYS = {"extraction": "facts", "update": "memory"}
THREADS = 1  # one thread: reproducible bytes, and the suite shares its cores


@dataclass(frozen=True)
class Setup:
    """How one stage's expert is trained and checked in this test."""

    max_length: int  # longest prompt+target (world-tokenizer tokens) kept, train and val
    n_train: int
    target_modules: str  # LoRA targets (D.3's default for extraction/update is q_proj,v_proj)
    rank: int
    alpha: int
    lr: float
    epochs: int
    max_new_tokens: int


# D.3's q_proj,v_proj LoRA is not enough on this 2-layer base (measured: extraction 0-93% valid depending on lr and
# epochs, update 0%): it cannot copy (no induction head), so each expert must write some text and close the JSON on
# its own, which takes LoRA on all linear layers. Same hyper-parameters for both stages.
SETUPS = {
    "extraction": Setup(max_length=200, n_train=250, target_modules="all-linear", rank=32, alpha=64, lr=3e-3, epochs=5,
                        max_new_tokens=64),
    "update": Setup(max_length=256, n_train=200, target_modules="all-linear", rank=32, alpha=64, lr=3e-3, epochs=6,
                    max_new_tokens=160),
}


def strictly_valid(stage: str, text: str) -> bool:
    """Strict JSON (no repair): ``{"facts": [str...]}`` or ``{"memory": [{"id", "text", "event"}...]}``."""
    try:
        obj = json.loads(text)
    except json.JSONDecodeError:
        return False
    if not isinstance(obj, dict) or set(obj) != {KEYS[stage]} or not isinstance(obj[KEYS[stage]], list):
        return False
    items = obj[KEYS[stage]]
    if stage == "extraction":
        return all(isinstance(f, str) for f in items)
    return all(isinstance(op, dict) and {"id", "text", "event"} <= set(op) for op in items)


@pytest.fixture(scope="module")
def observation_data(locomo_path, minilm, pretrained_tiny_lm):
    """Examples per split and stage, each kept when it fits its stage's ``max_length`` in the base's tokenizer.

    ``top_s=1`` (one retrieved memory per fact instead of the runtime's 5) keeps the update prompts short enough for CI.
    """
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(THREADS)  # the session's embedder may run 2 threads: on 2 busy cores that is 4x slower
    convs = load_locomo(locomo_path)
    tok = load_tokenizer(pretrained_tiny_lm)

    def build(split: str, max_batches: int) -> dict[str, list[dict]]:
        cfg = ObservationConfig(split=split, max_batches=max_batches, stages=("extraction", "update"), empty_ratio=None,
                                top_s=1)
        examples, _ = observation_examples(split_conversations(convs, split), cfg, minilm)
        return {s: [e for e in ex if len(encode_example(tok, e)[0]) <= SETUPS[s].max_length] for s, ex in examples.items()}

    yield build("train", 40), build("val", 60)
    torch.set_num_threads(threads)


@pytest.mark.locomo
@pytest.mark.parametrize("stage", ["extraction", "update"])
def test_expert_learns_its_format_on_observation_targets(pretrained_tiny_lm, observation_data, tmp_path, stage):
    """Measured numbers: README, "Distillation ... / Measured"."""
    from memlora.runtime.torch_engine import TorchEngine

    setup = SETUPS[stage]
    train_data, val_data = observation_data
    train, val = train_data[stage][: setup.n_train], val_data[stage]
    assert len(train) >= 0.75 * setup.n_train and len(val) >= 30, (len(train), len(val))
    config = TrainConfig(stage=stage, target_modules=setup.target_modules, rank=setup.rank, alpha=setup.alpha, lr=setup.lr,
                         batch_size=8, max_epochs=setup.epochs, patience=1, threads=THREADS, progress=False, plot=False)
    result = train_expert(pretrained_tiny_lm, train, val, tmp_path / stage, config)

    engine = TorchEngine(pretrained_tiny_lm, {stage: tmp_path / stage}, threads=THREADS)
    trained = [engine.generate(ex["messages"], stage, max_new_tokens=setup.max_new_tokens).text for ex in val]
    base = [engine.generate(ex["messages"], None, max_new_tokens=48).text for ex in val]
    valid = sum(strictly_valid(stage, t) for t in trained) / len(val)
    base_valid = sum(strictly_valid(stage, t) for t in base) / len(val)
    losses = [round(e.val_loss, 3) for e in result.epochs]
    print(f"{stage}: n_train={len(train)} n_val={len(val)} valid={valid:.3f} base_valid={base_valid:.3f} val_losses={losses}")
    assert base_valid < 0.10, base[:3]
    assert valid >= 0.90, [t for t in trained if not strictly_valid(stage, t)][:5]
    assert result.best_val_loss <= 0.5 * result.initial_val_loss, losses
