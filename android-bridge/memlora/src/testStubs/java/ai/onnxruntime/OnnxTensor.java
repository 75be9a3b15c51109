// Compile-only stub (test tree, never shipped): signatures mirror onnxruntime 1.31 Java API; see testStubs/README.md.
package ai.onnxruntime;

import java.nio.FloatBuffer;
import java.nio.LongBuffer;

public class OnnxTensor extends OnnxTensorLike {
  OnnxTensor() {}

  @Override
  public OnnxValueType getType() {
    throw new UnsupportedOperationException("compile-only stub");
  }

  @Override
  public Object getValue() throws OrtException {
    throw new UnsupportedOperationException("compile-only stub");
  }

  public FloatBuffer getFloatBuffer() {
    throw new UnsupportedOperationException("compile-only stub");
  }

  public LongBuffer getLongBuffer() {
    throw new UnsupportedOperationException("compile-only stub");
  }

  @Override
  public void close() {}

  public static OnnxTensor createTensor(OrtEnvironment env, Object data) throws OrtException {
    throw new UnsupportedOperationException("compile-only stub");
  }

  public static OnnxTensor createTensor(OrtEnvironment env, String[] data, long[] shape)
      throws OrtException {
    throw new UnsupportedOperationException("compile-only stub");
  }

  public static OnnxTensor createTensor(OrtEnvironment env, FloatBuffer data, long[] shape)
      throws OrtException {
    throw new UnsupportedOperationException("compile-only stub");
  }

  public static OnnxTensor createTensor(OrtEnvironment env, LongBuffer data, long[] shape)
      throws OrtException {
    throw new UnsupportedOperationException("compile-only stub");
  }
}
