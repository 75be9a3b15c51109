// Compile-only stub (test tree, never shipped): signatures mirror onnxruntime-genai 0.18 Java API; see testStubs/README.md.
package ai.onnxruntime.genai;

public class TokenizerStream implements AutoCloseable {
  TokenizerStream(long tokenizerStreamHandle) {}

  public String decode(int token) throws GenAIException {
    throw new UnsupportedOperationException("compile-only stub");
  }

  @Override
  public void close() {}
}
