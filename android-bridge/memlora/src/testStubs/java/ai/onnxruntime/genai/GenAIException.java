// Compile-only stub (test tree, never shipped): signatures mirror onnxruntime-genai 0.18 Java API; see testStubs/README.md.
package ai.onnxruntime.genai;

public class GenAIException extends Exception {
  private static final long serialVersionUID = 1L;

  public GenAIException(String message) {
    super(message);
  }

  public GenAIException(String message, Exception innerException) {
    super(message, innerException);
  }
}
