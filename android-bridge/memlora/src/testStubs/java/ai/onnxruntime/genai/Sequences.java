// Compile-only stub (test tree, never shipped): signatures mirror onnxruntime-genai 0.18 Java API; see testStubs/README.md.
package ai.onnxruntime.genai;

public final class Sequences implements AutoCloseable {
  Sequences(long sequencesHandle) {}

  public long numSequences() {
    throw new UnsupportedOperationException("compile-only stub");
  }

  public int[] getSequence(long sequenceIndex) {
    throw new UnsupportedOperationException("compile-only stub");
  }

  @Override
  public void close() {}
}
