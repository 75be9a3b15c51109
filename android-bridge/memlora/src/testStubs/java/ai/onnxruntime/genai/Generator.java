// Compile-only stub (test tree, never shipped): signatures mirror onnxruntime-genai 0.18 Java API; see testStubs/README.md.
package ai.onnxruntime.genai;

public final class Generator implements AutoCloseable, Iterable<Integer> {
  public Generator(Model model, GeneratorParams generatorParams) throws GenAIException {
    throw new UnsupportedOperationException("compile-only stub");
  }

  @Override
  public java.util.Iterator<Integer> iterator() {
    throw new UnsupportedOperationException("compile-only stub");
  }

  public boolean isDone() {
    throw new UnsupportedOperationException("compile-only stub");
  }

  public void appendTokens(int[] inputIDs) throws GenAIException {
    throw new UnsupportedOperationException("compile-only stub");
  }

  public void appendTokenSequences(Sequences sequences) throws GenAIException {
    throw new UnsupportedOperationException("compile-only stub");
  }

  public void rewindTo(long newLength) throws GenAIException {
    throw new UnsupportedOperationException("compile-only stub");
  }

  public void generateNextToken() throws GenAIException {
    throw new UnsupportedOperationException("compile-only stub");
  }

  public int[] getSequence(long sequenceIndex) throws GenAIException {
    throw new UnsupportedOperationException("compile-only stub");
  }

  public int getLastTokenInSequence(long sequenceIndex) throws GenAIException {
    throw new UnsupportedOperationException("compile-only stub");
  }

  public void setActiveAdapter(Adapters adapters, String adapterName) throws GenAIException {
    throw new UnsupportedOperationException("compile-only stub");
  }

  @Override
  public void close() {}
}
