"""memlora.corpus: the data the toolchain's two sides share (distill trains on it, the benchmarks score on it)."""
