"""The synthetic memory world (``memlora.world``): a generator of conversations with exact ground truth, the
distillation examples and LoCoMo-shaped files made from it, the pretraining of a base model on its text, the presets and
expert recipes of the cached world systems, the copy-attention loss their experts train with, and their evaluation.

It sits on top of the toolchain (runtime, export, distill, bench); nothing below imports it."""
