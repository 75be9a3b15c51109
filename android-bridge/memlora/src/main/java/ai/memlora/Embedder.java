package ai.memlora;

import java.io.Closeable;
import java.util.List;

/** Turns texts into unit-length float vectors (Python's {@code memlora.runtime.embedder.Embedder}). */
public interface Embedder extends Closeable {
  /** Vector size (384 for all-MiniLM-L6-v2). */
  int dim();

  /** One L2-normalised vector of {@link #dim()} floats per text, in order. */
  float[][] encode(List<String> texts);

  @Override
  void close();
}
