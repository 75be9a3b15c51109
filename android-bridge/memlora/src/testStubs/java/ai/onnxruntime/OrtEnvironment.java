// Compile-only stub (test tree, never shipped): signatures mirror onnxruntime 1.31 Java API; see testStubs/README.md.
package ai.onnxruntime;

public class OrtEnvironment implements AutoCloseable {
  OrtEnvironment() {}

  public static OrtEnvironment getEnvironment() {
    throw new UnsupportedOperationException("compile-only stub");
  }

  public static OrtEnvironment getEnvironment(String name) {
    throw new UnsupportedOperationException("compile-only stub");
  }

  public OrtSession createSession(String modelPath) throws OrtException {
    throw new UnsupportedOperationException("compile-only stub");
  }

  public OrtSession createSession(String modelPath, OrtSession.SessionOptions options)
      throws OrtException {
    throw new UnsupportedOperationException("compile-only stub");
  }

  public OrtSession createSession(byte[] modelArray, OrtSession.SessionOptions options)
      throws OrtException {
    throw new UnsupportedOperationException("compile-only stub");
  }

  public void setTelemetry(boolean sendTelemetry) throws OrtException {
    throw new UnsupportedOperationException("compile-only stub");
  }

  @Override
  public void close() {}
}
