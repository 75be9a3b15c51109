// Compile-only stub (test tree, never shipped): mirrors onnxruntime-extensions-android's OrtxPackage.
package ai.onnxruntime.extensions;

public final class OrtxPackage implements AutoCloseable {
  public static String getLibraryPath() {
    throw new UnsupportedOperationException("compile-only stub");
  }

  public static synchronized OrtxPackage getPackage() {
    throw new UnsupportedOperationException("compile-only stub");
  }

  @Override
  public void close() {}
}
