// Compile-only stub (test tree, never shipped): signatures of the Android SDK public API.
package android.content.res;

import java.io.IOException;
import java.io.InputStream;

public final class AssetManager implements AutoCloseable {
  private AssetManager() {}

  public String[] list(String path) throws IOException {
    throw new UnsupportedOperationException("compile-only stub");
  }

  public InputStream open(String fileName) throws IOException {
    throw new UnsupportedOperationException("compile-only stub");
  }

  @Override
  public void close() {}
}
