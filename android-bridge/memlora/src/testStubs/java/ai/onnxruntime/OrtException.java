// Compile-only stub (test tree, never shipped): signatures mirror onnxruntime 1.31 Java API; see testStubs/README.md.
package ai.onnxruntime;

public class OrtException extends Exception {
  private static final long serialVersionUID = 1L;

  public OrtException(String message) {
    super(message);
  }
}
