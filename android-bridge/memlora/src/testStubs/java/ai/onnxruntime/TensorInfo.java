// Compile-only stub (test tree, never shipped): signatures mirror onnxruntime 1.31 Java API; see testStubs/README.md.
package ai.onnxruntime;

public class TensorInfo implements ValueInfo {
  TensorInfo() {}

  public long[] getShape() {
    throw new UnsupportedOperationException("compile-only stub");
  }

  public boolean isScalar() {
    throw new UnsupportedOperationException("compile-only stub");
  }
}
