package ai.memlora;

import java.io.File;
import java.io.IOException;
import java.math.BigDecimal;
import java.math.BigInteger;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

/**
 * Loads the golden fixtures written by {@code memlora-export golden -o DIR} (directory given by the
 * system property {@code memlora.golden}) and compares Java results with them. Fixtures are read with
 * {@link StrictJson} so integers stay integers, exactly as Python wrote them.
 */
final class Golden {
  private Golden() {}

  static File dir() {
    String path = System.getProperty("memlora.golden");
    if (path == null || path.isEmpty()) {
      throw new AssertionError(
          "system property memlora.golden is not set: run `python tests/android/android_golden.py DIR` and pass -Dmemlora.golden=DIR");
    }
    return new File(path);
  }

  @SuppressWarnings("unchecked")
  static Map<String, Object> file(String name) {
    File f = new File(dir(), name);
    try {
      String text = new String(Files.readAllBytes(f.toPath()), StandardCharsets.UTF_8);
      Map<String, Object> root = (Map<String, Object>) StrictJson.rawDecode(text, 0);
      if (!Long.valueOf(1).equals(root.get("format"))) {
        throw new AssertionError(name + ": unknown fixture format " + root.get("format"));
      }
      return root;
    } catch (IOException e) {
      throw new AssertionError("cannot read golden file " + f + ": " + e);
    } catch (StrictJson.Invalid e) {
      throw new AssertionError("golden file " + f + " is not JSON: " + e.getMessage());
    }
  }

  @SuppressWarnings("unchecked")
  static List<Map<String, Object>> cases(String name) {
    return (List<Map<String, Object>>) file(name).get("cases");
  }

  @SuppressWarnings("unchecked")
  static Map<String, Object> map(Object v) {
    return (Map<String, Object>) v;
  }

  @SuppressWarnings("unchecked")
  static List<Object> list(Object v) {
    return (List<Object>) v;
  }

  /** A Java runtime value as the JSON Python's {@code golden.jsonable} writes. */
  static Object jsonable(Object v) {
    if (v instanceof UpdateOp || v instanceof ResolvedOp) { // the Python dataclasses have the same names
      Map<String, Object> m = typed(v.getClass().getSimpleName());
      m.putAll(map(MemoryStore.itemJson(v)));
      return m;
    }
    if (v instanceof VqaAnswer) {
      VqaAnswer a = (VqaAnswer) v;
      return typed("VQAAnswer", "answer", a.answer, "reason", a.reason);
    }
    if (v instanceof ChatMessage) {
      return ((ChatMessage) v).toMap();
    }
    if (v instanceof Map) {
      Map<String, Object> m = new LinkedHashMap<String, Object>();
      for (Map.Entry<?, ?> e : ((Map<?, ?>) v).entrySet()) {
        m.put(String.valueOf(e.getKey()), jsonable(e.getValue()));
      }
      return m;
    }
    if (v instanceof List) {
      List<Object> out = new ArrayList<Object>();
      for (Object item : (List<?>) v) {
        out.add(jsonable(item));
      }
      return out;
    }
    if (v instanceof Double && (((Double) v).isNaN() || ((Double) v).isInfinite())) {
      Map<String, Object> m = new LinkedHashMap<String, Object>();
      m.put("__float__", PyRepr.floatRepr((Double) v));
      return m;
    }
    return v;
  }

  /** A dataclass as {@code golden.jsonable} writes it: {@code {"__type__": name, k1: v1, ...}}. */
  static Map<String, Object> typed(String name, Object... keysAndValues) {
    Map<String, Object> m = JsonValues.object("__type__", name);
    m.putAll(JsonValues.object(keysAndValues));
    return m;
  }

  static List<Object> rejections(List<Rejection> rejected) {
    List<Object> out = new ArrayList<Object>();
    for (Rejection r : rejected) {
      out.add(JsonValues.object("item", jsonable(r.item), "reason", r.reason));
    }
    return out;
  }

  // ---- the store's values as Python's golden writer records them (shared by the store and loop tests)

  /** Search scores may differ by this much (FAISS's SIMD sums round differently). */
  static final double SCORE_TOL = 1e-5;

  static float[] floats(Object v) {
    List<Object> list = list(v);
    float[] out = new float[list.size()];
    for (int k = 0; k < out.length; k++) {
      out[k] = ((Number) list.get(k)).floatValue();
    }
    return out;
  }

  /** Deterministic ids or timestamps: {@code format} filled with 1, 2, 3... */
  static final class Counter implements MemoryStore.IdFactory, MemoryStore.Clock {
    private final String format;
    private int n;

    Counter(String format) {
      this.format = format;
    }

    @Override
    public String newId() {
      return String.format(format, ++n);
    }

    @Override
    public String now() {
      return newId();
    }
  }

  static MemoryStore.IdFactory counter(String format) {
    return new Counter(format);
  }

  static MemoryStore.Clock clock(String format) {
    return new Counter(format);
  }

  static Map<String, Object> record(MemoryRecord r) {
    return typed("MemoryRecord", "id", r.id, "user_id", r.userId, "agent_id", r.agentId, "run_id", r.runId,
        "text", r.text, "hash", r.hash, "created_at", r.createdAt, "updated_at", r.updatedAt,
        "timestamp", r.timestamp, "source_ids", new ArrayList<Object>(r.sourceIds),
        "image_refs", new ArrayList<Object>(r.imageRefs), "metadata", jsonable(r.metadata));
  }

  /** Every record of each of {@code users}, by user. */
  static Map<String, Object> recordsByUser(MemoryStore store, Iterable<String> users) {
    Map<String, Object> out = new LinkedHashMap<String, Object>();
    for (String user : users) {
      List<Object> rows = new ArrayList<Object>();
      for (MemoryRecord r : store.getAll(user, null, null, null)) {
        rows.add(record(r));
      }
      out.put(user, rows);
    }
    return out;
  }

  static Map<String, Object> event(MemoryStore.MemoryEvent e) {
    return typed("MemoryEvent", "id", e.id, "event", e.event, "text", e.text, "old_text", e.oldText);
  }

  static List<Object> events(List<MemoryStore.MemoryEvent> events) {
    List<Object> out = new ArrayList<Object>();
    for (MemoryStore.MemoryEvent e : events) {
      out.add(event(e));
    }
    return out;
  }

  static Map<String, Object> historyEntry(MemoryStore.HistoryEntry h) {
    return typed("HistoryEntry", "id", h.id, "memory_id", h.memoryId, "user_id", h.userId, "event", h.event,
        "old_text", h.oldText, "new_text", h.newText, "created_at", h.createdAt, "batch", h.batch,
        "actor", h.actor);
  }

  /** The store's whole rejections table. */
  static List<Object> rejectionEntries(MemoryStore store) {
    List<Object> out = new ArrayList<Object>();
    for (MemoryStore.RejectionEntry r : store.rejections(null)) {
      out.add(typed("RejectionEntry", "batch", r.batch, "user_id", r.userId, "item", jsonable(r.item),
          "reason", r.reason, "created_at", r.createdAt));
    }
    return out;
  }

  /** What {@code Memory.add} returned, as Python's loop fixtures record it: facts, events, rejected, retrieved ids. */
  static Map<String, Object> addResult(Memory.AddResult r) {
    Map<String, Object> got = new LinkedHashMap<String, Object>();
    got.put("facts", new ArrayList<Object>(r.facts));
    got.put("events", events(r.events));
    got.put("rejected", rejections(r.rejected));
    List<Object> retrieved = new ArrayList<Object>();
    for (MemoryStore.SearchHit h : r.retrieved) {
      retrieved.add(h.record.id);
    }
    got.put("retrieved", retrieved);
    return got;
  }

  /** After a loop step: the engine {@code calls} and the store's records, batch sequence and rejections as in
   * the fixture case {@code c}. */
  static void checkStepState(Report report, String id, Map<String, Object> c, List<Object> calls,
      MemoryStore store) {
    report.check(id + " calls", c.get("calls"), new ArrayList<Object>(calls));
    Map<String, Object> state = map(c.get("state"));
    report.check(id + " records", state.get("records"), recordsByUser(store, map(state.get("records")).keySet()));
    report.check(id + " batch_seq", state.get("batch_seq"), store.batchSequence());
    report.check(id + " rejections", state.get("rejections"), rejectionEntries(store));
  }

  /** Search hits as {@code {id, score}} ({@code {id, text, score}} with {@code withText}). */
  static List<Object> hits(List<MemoryStore.SearchHit> hits, boolean withText) {
    List<Object> out = new ArrayList<Object>();
    for (MemoryStore.SearchHit h : hits) {
      out.add(withText
          ? JsonValues.object("id", h.record.id, "text", h.record.text, "score", (double) h.score)
          : JsonValues.object("id", h.record.id, "score", (double) h.score));
    }
    return out;
  }

  /** Search results: same ids in the same order; scores within {@link #SCORE_TOL}. */
  static void checkHits(Report report, String id, Object expected, Object actual) {
    List<Object> e = list(expected);
    List<Object> a = list(actual);
    report.check(id + " ranking", ids(e), ids(a));
    for (int k = 0; k < Math.min(e.size(), a.size()); k++) {
      double es = ((Number) map(e.get(k)).get("score")).doubleValue();
      double as = ((Number) map(a.get(k)).get("score")).doubleValue();
      if (!close(es, as, SCORE_TOL)) {
        report.fail(id, "score[" + k + "] " + as + " != " + es);
      }
    }
  }

  private static List<Object> ids(List<Object> hits) {
    List<Object> out = new ArrayList<Object>();
    for (Object o : hits) {
      out.add(map(o).get("id"));
    }
    return out;
  }

  /** Null when equal, else a description of the first difference. Key order is compared too. */
  static String diff(Object expected, Object actual, String path) {
    if (expected == null || actual == null) {
      return expected == actual ? null : path + ": expected " + show(expected) + ", got " + show(actual);
    }
    if (expected instanceof Number && actual instanceof Number) {
      if (isInteger(expected) != isInteger(actual)) {
        return path + ": expected " + show(expected) + ", got " + show(actual) + " (int vs float)";
      }
      BigDecimal a = new BigDecimal(expected.toString());
      BigDecimal b = new BigDecimal(actual.toString());
      return a.compareTo(b) == 0 ? null : path + ": expected " + expected + ", got " + actual;
    }
    if (expected instanceof Map && actual instanceof Map) {
      Map<?, ?> e = (Map<?, ?>) expected;
      Map<?, ?> a = (Map<?, ?>) actual;
      if (!new ArrayList<Object>(e.keySet()).equals(new ArrayList<Object>(a.keySet()))) {
        return path + ": keys " + e.keySet() + " != " + a.keySet();
      }
      for (Map.Entry<?, ?> entry : e.entrySet()) {
        String d = diff(entry.getValue(), a.get(entry.getKey()), path + "." + entry.getKey());
        if (d != null) {
          return d;
        }
      }
      return null;
    }
    if (expected instanceof List && actual instanceof List) {
      List<?> e = (List<?>) expected;
      List<?> a = (List<?>) actual;
      if (e.size() != a.size()) {
        return path + ": length " + e.size() + " != " + a.size() + " (expected " + show(e) + ", got " + show(a) + ")";
      }
      for (int k = 0; k < e.size(); k++) {
        String d = diff(e.get(k), a.get(k), path + "[" + k + "]");
        if (d != null) {
          return d;
        }
      }
      return null;
    }
    return expected.equals(actual) ? null : path + ": expected " + show(expected) + ", got " + show(actual);
  }

  /** Numbers compare by value within {@code tol}; everything else exactly. */
  static boolean close(double a, double b, double tol) {
    return Math.abs(a - b) <= tol;
  }

  private static boolean isInteger(Object n) {
    return n instanceof Long || n instanceof Integer || n instanceof BigInteger;
  }

  static String show(Object v) {
    String s = v instanceof String ? PyRepr.repr(v) : String.valueOf(v);
    return s.length() > 300 ? s.substring(0, 300) + "..." : s;
  }

  /** Collects mismatches and fails once with all of them. */
  static final class Report {
    private final String what;
    private final List<String> failures = new ArrayList<String>();
    private int checked;

    Report(String what) {
      this.what = what;
    }

    void check(String caseId, Object expected, Object actual) {
      checked++;
      String d = diff(expected, actual, "");
      if (d != null) {
        failures.add(caseId + " " + d);
      }
    }

    void fail(String caseId, String message) {
      checked++;
      failures.add(caseId + " " + message);
    }

    void assertAllPassed() {
      if (checked == 0) {
        throw new AssertionError(what + ": no golden cases were checked");
      }
      if (!failures.isEmpty()) {
        StringBuilder sb = new StringBuilder();
        sb.append(what).append(": ").append(failures.size()).append(" of ").append(checked)
            .append(" golden checks differ from Python:\n");
        for (String f : failures) {
          sb.append("  ").append(f).append('\n');
        }
        throw new AssertionError(sb.toString());
      }
    }
  }
}
