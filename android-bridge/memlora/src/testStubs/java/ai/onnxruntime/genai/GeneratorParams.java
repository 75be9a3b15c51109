// Compile-only stub (test tree, never shipped): signatures mirror onnxruntime-genai 0.18 Java API; see testStubs/README.md.
package ai.onnxruntime.genai;

public final class GeneratorParams implements AutoCloseable {
  public GeneratorParams(Model model) throws GenAIException {
    throw new UnsupportedOperationException("compile-only stub");
  }

  public void setSearchOption(String optionName, double value) throws GenAIException {
    throw new UnsupportedOperationException("compile-only stub");
  }

  public void setSearchOption(String optionName, boolean value) throws GenAIException {
    throw new UnsupportedOperationException("compile-only stub");
  }

  @Override
  public void close() {}
}
