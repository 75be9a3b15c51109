"""memlora: a private, on-device long-term memory run by a small language model with one LoRA expert per memory operation.

The package is one namespace over the repository's top-level folders:

- ``memlora.runtime``  (``runtime/``)    on-device: prompts, parsing, memory store, embedder, engines, the memory loop
- ``memlora.export``   (``export/``)     trained adapters -> verified ONNX Runtime GenAI multi-LoRA bundle
- ``memlora.corpus``   (``corpus/``)     the data both toolchain sides read: LoCoMo, the distillation example files, VQA
- ``memlora.distill``  (``distill/``)    teacher data, cleaning, expert training
- ``memlora.bench``    (``benchmarks/``) speed and quality harness
- ``memlora.world``    (``world/``)      the synthetic memory world: generator, pretraining, presets, evaluation

Layers only look down: ``memlora.errors``/``paths``/``models`` at the bottom, then runtime, export, corpus, distill
and bench side by side (neither imports the other), world; ``memlora.cli`` and ``memlora.demo`` on top (``tests/test_layers.py`` checks it).
"""

__version__ = "0.1.0"

STAGES = ("extraction", "update", "generation", "vqa")
"""The memory operations, one expert adapter each (paper 3.2 and 3.3); the text memory loop's three come first, in the
order the loop runs them."""

LOOP_STAGES = STAGES[:3]
"""The text memory loop's stages in pipeline order (extraction, update, generation): ``STAGES`` without vqa."""
