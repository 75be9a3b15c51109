// Compile-only stub (test tree, never shipped): signatures mirror onnxruntime 1.31 Java API; see testStubs/README.md.
package ai.onnxruntime;

public abstract class OnnxTensorLike implements OnnxValue {
  OnnxTensorLike() {}

  @Override
  public TensorInfo getInfo() {
    throw new UnsupportedOperationException("compile-only stub");
  }

  @Override
  public synchronized boolean isClosed() {
    throw new UnsupportedOperationException("compile-only stub");
  }
}
