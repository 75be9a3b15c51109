// Compile-only stub (test tree, never shipped): signatures mirror onnxruntime-genai 0.18 Java API; see testStubs/README.md.
package ai.onnxruntime.genai;

public final class Model implements AutoCloseable {
  public Model(String modelPath) throws GenAIException {
    throw new UnsupportedOperationException("compile-only stub");
  }

  public Tokenizer createTokenizer() throws GenAIException {
    throw new UnsupportedOperationException("compile-only stub");
  }

  public GeneratorParams createGeneratorParams() throws GenAIException {
    throw new UnsupportedOperationException("compile-only stub");
  }

  @Override
  public void close() {}
}
