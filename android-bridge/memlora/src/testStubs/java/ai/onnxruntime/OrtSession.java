// Compile-only stub (test tree, never shipped): signatures mirror onnxruntime 1.31 Java API; see testStubs/README.md.
package ai.onnxruntime;

import java.util.Iterator;
import java.util.Map;
import java.util.Optional;
import java.util.Set;

public class OrtSession implements AutoCloseable {
  OrtSession() {}

  public long getNumInputs() {
    throw new UnsupportedOperationException("compile-only stub");
  }

  public Set<String> getInputNames() {
    throw new UnsupportedOperationException("compile-only stub");
  }

  public Set<String> getOutputNames() {
    throw new UnsupportedOperationException("compile-only stub");
  }

  public Result run(Map<String, ? extends OnnxTensorLike> inputs) throws OrtException {
    throw new UnsupportedOperationException("compile-only stub");
  }

  public Result run(Map<String, ? extends OnnxTensorLike> inputs, Set<String> requestedOutputs)
      throws OrtException {
    throw new UnsupportedOperationException("compile-only stub");
  }

  @Override
  public void close() throws OrtException {}

  public static class SessionOptions implements AutoCloseable {
    public SessionOptions() {}

    public void setIntraOpNumThreads(int numThreads) throws OrtException {
      throw new UnsupportedOperationException("compile-only stub");
    }

    public void setInterOpNumThreads(int numThreads) throws OrtException {
      throw new UnsupportedOperationException("compile-only stub");
    }

    public void registerCustomOpLibrary(String path) throws OrtException {
      throw new UnsupportedOperationException("compile-only stub");
    }

    public void addConfigEntry(String configKey, String configValue) throws OrtException {
      throw new UnsupportedOperationException("compile-only stub");
    }

    @Override
    public void close() {}
  }

  public static class Result implements AutoCloseable, Iterable<Map.Entry<String, OnnxValue>> {
    Result() {}

    public OnnxValue get(int index) {
      throw new UnsupportedOperationException("compile-only stub");
    }

    public Optional<OnnxValue> get(String key) {
      throw new UnsupportedOperationException("compile-only stub");
    }

    public int size() {
      throw new UnsupportedOperationException("compile-only stub");
    }

    @Override
    public Iterator<Map.Entry<String, OnnxValue>> iterator() {
      throw new UnsupportedOperationException("compile-only stub");
    }

    @Override
    public void close() {}
  }
}
