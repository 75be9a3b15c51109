// Compile-only stub (test tree, never shipped): signatures mirror onnxruntime-genai 0.18 Java API; see testStubs/README.md.
package ai.onnxruntime.genai;

public final class Adapters implements AutoCloseable {
  public Adapters(Model model) throws GenAIException {
    throw new UnsupportedOperationException("compile-only stub");
  }

  public void loadAdapter(String adapterFilePath, String adapterName) throws GenAIException {
    throw new UnsupportedOperationException("compile-only stub");
  }

  public void unloadAdapter(String adapterName) throws GenAIException {
    throw new UnsupportedOperationException("compile-only stub");
  }

  @Override
  public void close() {}
}
