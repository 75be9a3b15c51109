// Compile-only stub (test tree, never shipped): signatures mirror onnxruntime 1.31 Java API; see testStubs/README.md.
package ai.onnxruntime;

public interface OnnxValue extends AutoCloseable {
  public enum OnnxValueType {
    ONNX_TYPE_UNKNOWN,
    ONNX_TYPE_TENSOR,
    ONNX_TYPE_SEQUENCE,
    ONNX_TYPE_MAP,
    ONNX_TYPE_OPAQUE,
    ONNX_TYPE_SPARSETENSOR
  }

  public OnnxValueType getType();

  public Object getValue() throws OrtException;

  public ValueInfo getInfo();

  public boolean isClosed();

  @Override
  public void close();
}
