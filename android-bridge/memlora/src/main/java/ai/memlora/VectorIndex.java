package ai.memlora;

import java.util.ArrayList;
import java.util.Collections;
import java.util.Comparator;
import java.util.Iterator;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Set;

/**
 * Exact inner-product search over unit float vectors (cosine), keyed by the store's integer keys: the
 * Java counterpart of the Python store's {@code IndexIDMap2(IndexFlatIP)}, with FAISS's result order.
 *
 * <p>Vectors keep an insertion order like FAISS's internal positions (removing one keeps the order of
 * the rest; an update is a remove plus an append). For k = 1 the first best vector wins; for k &gt; 1
 * FAISS's heap keeps a candidate only when it beats the current k-th score strictly, evicting the
 * k-th best with the lowest position among equals, and returns scores best first, equal scores in
 * decreasing position. This is exactly what faiss-cpu 1.15 returns for k &lt; 100 (its heap path).
 */
public final class VectorIndex {
  /** One result: the key and its score. */
  public static final class Hit {
    public final long key;
    public final float score;

    Hit(long key, float score) {
      this.key = key;
      this.score = score;
    }
  }

  private final int dim;
  private final LinkedHashMap<Long, float[]> vectors = new LinkedHashMap<Long, float[]>();

  public VectorIndex(int dim) {
    this.dim = dim;
  }

  public int size() {
    return vectors.size();
  }

  public int dim() {
    return dim;
  }

  /** Appends a vector (replacing any vector with the same key, which then moves to the end). */
  public void add(long key, float[] vector) {
    if (vector.length != dim) {
      throw new StoreException("vector has " + vector.length + " values, the index holds " + dim + "-d vectors");
    }
    vectors.remove(key);
    vectors.put(key, vector.clone());
  }

  public void remove(long key) {
    vectors.remove(key);
  }

  public void clear() {
    vectors.clear();
  }

  /** Inner product accumulated in double, rounded once to float. */
  static float dot(float[] a, float[] b) {
    double s = 0.0;
    for (int k = 0; k < a.length; k++) {
      s += (double) a[k] * (double) b[k];
    }
    return (float) s;
  }

  private static final class Entry {
    final long key;
    final int position;
    final float score;

    Entry(long key, int position, float score) {
      this.key = key;
      this.position = position;
      this.score = score;
    }
  }

  /** Ascending (score, position): the heap's "smallest" element is the one evicted first. */
  private static final Comparator<Entry> ASCENDING =
      new Comparator<Entry>() {
        @Override
        public int compare(Entry a, Entry b) {
          int c = Float.compare(a.score, b.score);
          return c != 0 ? c : Integer.compare(a.position, b.position);
        }
      };

  /** The best {@code k} keys for {@code query}, among {@code allowed} keys (null: all), best first. */
  public List<Hit> search(float[] query, int k, Set<Long> allowed) {
    if (query.length != dim) {
      throw new StoreException("query has " + query.length + " values, the index holds " + dim + "-d vectors");
    }
    List<Hit> out = new ArrayList<Hit>();
    if (k <= 0 || vectors.isEmpty()) {
      return out;
    }
    int position = -1;
    if (k == 1) {
      Entry best = null;
      for (Map.Entry<Long, float[]> e : vectors.entrySet()) {
        position++;
        if (allowed != null && !allowed.contains(e.getKey())) {
          continue;
        }
        float s = dot(query, e.getValue());
        if (best == null || s > best.score) {
          best = new Entry(e.getKey(), position, s);
        }
      }
      if (best != null) {
        out.add(new Hit(best.key, best.score));
      }
      return out;
    }
    List<Entry> kept = new ArrayList<Entry>();
    for (Iterator<Map.Entry<Long, float[]>> it = vectors.entrySet().iterator(); it.hasNext(); ) {
      Map.Entry<Long, float[]> e = it.next();
      position++;
      if (allowed != null && !allowed.contains(e.getKey())) {
        continue;
      }
      Entry candidate = new Entry(e.getKey(), position, dot(query, e.getValue()));
      if (kept.size() < k) {
        kept.add(candidate);
        continue;
      }
      Entry smallest = Collections.min(kept, ASCENDING);
      if (candidate.score > smallest.score) {
        kept.remove(smallest);
        kept.add(candidate);
      }
    }
    Collections.sort(kept, Collections.reverseOrder(ASCENDING));
    for (Entry e : kept) {
      out.add(new Hit(e.key, e.score));
    }
    return out;
  }
}
