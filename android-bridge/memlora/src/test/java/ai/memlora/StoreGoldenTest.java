package ai.memlora;

import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import org.junit.Test;

/**
 * Replays the scripted store session of {@code store.json} on the Java store over SQLite (JDBC): every
 * step's events, errors and search rankings, and the full state after it (records, history, rejections,
 * batch number, stored vectors) equal Python's.
 */
public class StoreGoldenTest {
  static final double VECTOR_TOL = 1e-6;
  static final double SCORE_TOL = 1e-5;

  static float[] floats(Object v) {
    List<Object> list = Golden.list(v);
    float[] out = new float[list.size()];
    for (int k = 0; k < out.length; k++) {
      out[k] = ((Number) list.get(k)).floatValue();
    }
    return out;
  }

  @SuppressWarnings("unchecked")
  static List<String> strings(Object v) {
    return v == null ? null : (List<String>) v;
  }

  static MemoryStore.IdFactory counter(final String format) {
    return new MemoryStore.IdFactory() {
      int n;

      @Override
      public String newId() {
        return String.format(format, ++n);
      }
    };
  }

  static MemoryStore.Clock clock(final String format) {
    return new MemoryStore.Clock() {
      int n;

      @Override
      public String now() {
        return String.format(format, ++n);
      }
    };
  }

  static Map<String, Object> record(MemoryRecord r) {
    Map<String, Object> m = typed("MemoryRecord");
    m.put("id", r.id);
    m.put("user_id", r.userId);
    m.put("agent_id", r.agentId);
    m.put("run_id", r.runId);
    m.put("text", r.text);
    m.put("hash", r.hash);
    m.put("created_at", r.createdAt);
    m.put("updated_at", r.updatedAt);
    m.put("timestamp", r.timestamp);
    m.put("source_ids", new ArrayList<Object>(r.sourceIds));
    m.put("image_refs", new ArrayList<Object>(r.imageRefs));
    m.put("metadata", Golden.jsonable(r.metadata));
    return m;
  }

  static Map<String, Object> event(MemoryStore.MemoryEvent e) {
    Map<String, Object> m = typed("MemoryEvent");
    m.put("id", e.id);
    m.put("event", e.event);
    m.put("text", e.text);
    m.put("old_text", e.oldText);
    return m;
  }

  static Map<String, Object> typed(String name) {
    Map<String, Object> m = new LinkedHashMap<String, Object>();
    m.put("__type__", name);
    return m;
  }

  static List<Object> events(List<MemoryStore.MemoryEvent> events) {
    List<Object> out = new ArrayList<Object>();
    for (MemoryStore.MemoryEvent e : events) {
      out.add(event(e));
    }
    return out;
  }

  static List<Rejection> rejections(Object v) {
    List<Rejection> out = new ArrayList<Rejection>();
    if (v != null) {
      for (Object r : Golden.list(v)) {
        out.add(new Rejection(Golden.map(r).get("item"), (String) Golden.map(r).get("reason")));
      }
    }
    return out;
  }

  /** Runs one step; returns the JSON result Python records (search: list of {id, score}). */
  static Object run(MemoryStore store, Map<String, Object> step) {
    String op = (String) step.get("op");
    if (op.equals("apply_update")) {
      List<ResolvedOp> ops = new ArrayList<ResolvedOp>();
      for (Object o : Golden.list(step.get("ops"))) {
        Map<String, Object> m = Golden.map(o);
        ops.add(new ResolvedOp((String) m.get("event"), (String) m.get("memory_id"), (String) m.get("text"),
            (String) m.get("old_text")));
      }
      Map<String, float[]> vectors = new LinkedHashMap<String, float[]>();
      for (Map.Entry<String, Object> e : Golden.map(step.get("vectors")).entrySet()) {
        vectors.put(e.getKey(), floats(e.getValue()));
      }
      MemoryStore.BatchEvents batch = store.applyUpdate(
          (String) step.get("user_id"), ops, vectors, (String) step.get("agent_id"), (String) step.get("run_id"),
          (String) step.get("timestamp"), strings(step.get("source_ids")), strings(step.get("image_refs")),
          Golden.map(step.get("metadata")), rejections(step.get("rejected")), (String) step.get("actor"));
      Map<String, Object> out = new LinkedHashMap<String, Object>();
      out.put("events", events(batch.events));
      out.put("batch", batch.batch);
      List<Rejection> refused = new ArrayList<Rejection>(batch.rejected);
      List<Object> jsonRefused = new ArrayList<Object>();
      for (Rejection r : refused) {
        Map<String, Object> m = new LinkedHashMap<String, Object>();
        m.put("item", Golden.jsonable(r.item));
        m.put("reason", r.reason);
        jsonRefused.add(m);
      }
      out.put("rejected", jsonRefused);
      return out;
    } else if (op.equals("search")) {
      List<Object> out = new ArrayList<Object>();
      for (MemoryStore.SearchHit h : store.search((String) step.get("user_id"), floats(step.get("vector")),
          ((Number) step.get("k")).intValue(), (String) step.get("agent_id"), (String) step.get("run_id"))) {
        Map<String, Object> m = new LinkedHashMap<String, Object>();
        m.put("id", h.record.id);
        m.put("score", (double) h.score);
        out.add(m);
      }
      return out;
    } else if (op.equals("update")) {
      return event(store.update((String) step.get("memory_id"), (String) step.get("text"), floats(step.get("vector")),
          (String) step.get("timestamp"), Golden.map(step.get("metadata")), (String) step.get("actor")));
    } else if (op.equals("delete")) {
      return event(store.delete((String) step.get("memory_id"), (String) step.get("actor")));
    } else if (op.equals("delete_all")) {
      return events(store.deleteAll((String) step.get("user_id"), (String) step.get("agent_id"),
          (String) step.get("run_id"), (String) step.get("actor")));
    } else if (op.equals("reset")) {
      store.reset();
      return null;
    }
    throw new AssertionError("unknown store step " + op);
  }

  /** Search results: same ids in the same order; scores within SCORE_TOL. */
  static void checkHits(Golden.Report report, String id, Object expected, Object actual) {
    List<Object> e = Golden.list(expected);
    List<Object> a = Golden.list(actual);
    List<Object> eIds = new ArrayList<Object>();
    List<Object> aIds = new ArrayList<Object>();
    for (Object o : e) {
      eIds.add(Golden.map(o).get("id"));
    }
    for (Object o : a) {
      aIds.add(Golden.map(o).get("id"));
    }
    report.check(id + " ranking", eIds, aIds);
    for (int k = 0; k < Math.min(e.size(), a.size()); k++) {
      double es = ((Number) Golden.map(e.get(k)).get("score")).doubleValue();
      double as = ((Number) Golden.map(a.get(k)).get("score")).doubleValue();
      if (!Golden.close(es, as, SCORE_TOL)) {
        report.fail(id, "score[" + k + "] " + as + " != " + es);
      }
    }
  }

  static Map<String, Object> snapshot(MemoryStore store, Map<String, Object> expected) {
    Map<String, Object> out = new LinkedHashMap<String, Object>();
    Map<String, Object> users = new LinkedHashMap<String, Object>();
    for (String user : Golden.map(expected.get("users")).keySet()) {
      List<Object> records = new ArrayList<Object>();
      for (MemoryRecord r : store.getAll(user, null, null, null)) {
        records.add(record(r));
      }
      users.put(user, records);
    }
    out.put("users", users);
    Map<String, Object> history = new LinkedHashMap<String, Object>();
    for (String memoryId : Golden.map(expected.get("history")).keySet()) {
      List<Object> rows = new ArrayList<Object>();
      for (MemoryStore.HistoryEntry h : store.history(memoryId)) {
        Map<String, Object> m = typed("HistoryEntry");
        m.put("id", h.id);
        m.put("memory_id", h.memoryId);
        m.put("user_id", h.userId);
        m.put("event", h.event);
        m.put("old_text", h.oldText);
        m.put("new_text", h.newText);
        m.put("created_at", h.createdAt);
        m.put("batch", h.batch);
        m.put("actor", h.actor);
        rows.add(m);
      }
      history.put(memoryId, rows);
    }
    out.put("history", history);
    List<Object> rejections = new ArrayList<Object>();
    for (MemoryStore.RejectionEntry r : store.rejections(null)) {
      Map<String, Object> m = typed("RejectionEntry");
      m.put("batch", r.batch);
      m.put("user_id", r.userId);
      m.put("item", Golden.jsonable(r.item));
      m.put("reason", r.reason);
      m.put("created_at", r.createdAt);
      rejections.add(m);
    }
    out.put("rejections", rejections);
    out.put("batch_seq", store.batchSequence());
    return out;
  }

  static void checkVectors(Golden.Report report, String id, MemoryStore store, Map<String, Object> expected) {
    for (Map.Entry<String, Object> e : expected.entrySet()) {
      float[] got = store.vector(e.getKey());
      float[] want = floats(e.getValue());
      if (got == null || got.length != want.length) {
        report.fail(id, "vector of " + e.getKey() + " missing or of the wrong size");
        continue;
      }
      for (int k = 0; k < want.length; k++) {
        if (!Golden.close(want[k], got[k], VECTOR_TOL)) {
          report.fail(id, "vector of " + e.getKey() + "[" + k + "] " + got[k] + " != " + want[k]);
          break;
        }
      }
    }
  }

  @Test
  public void scriptedSessionMatchesPython() {
    Golden.Report report = new Golden.Report("store");
    MemoryStore store = new MemoryStore(JdbcSqlDatabase.open(":memory:"), 4, counter("mem-%03d"),
        clock("2024-01-01T00:00:%02d+00:00"));
    try {
      for (Map<String, Object> c : Golden.cases("store.json")) {
        String id = (String) c.get("id");
        Map<String, Object> step = Golden.map(c.get("step"));
        try {
          Object result = run(store, step);
          if (c.containsKey("error")) {
            report.fail(id, "Python raised " + c.get("error") + " (" + c.get("message") + ") but Java did not");
          } else if ("search".equals(step.get("op"))) {
            checkHits(report, id, c.get("result"), result);
          } else {
            report.check(id + " result", c.get("result"), result);
          }
        } catch (MemloraException e) {
          String name = e.getClass().getSimpleName().replace("Exception", "Error");
          if (!c.containsKey("error")) {
            report.fail(id, "Java raised " + e + " but Python did not");
          } else {
            report.check(id + " error", c.get("error"), name);
          }
        }
        Map<String, Object> state = Golden.map(c.get("state"));
        Map<String, Object> expected = new LinkedHashMap<String, Object>(state);
        Map<String, Object> vectors = Golden.map(expected.remove("vectors"));
        report.check(id + " state", expected, snapshot(store, expected));
        checkVectors(report, id, store, vectors);
      }
    } finally {
      store.close();
    }
    report.assertAllPassed();
  }

  @Test
  public void retrievalRankingsMatchPython() {
    Golden.Report report = new Golden.Report("retrieval");
    for (Map<String, Object> c : Golden.cases("retrieval.json")) {
      int dim = ((Number) c.get("dim")).intValue();
      MemoryStore store = new MemoryStore(JdbcSqlDatabase.open(":memory:"), dim, counter("r-%03d"), clock("t%d"));
      try {
        for (Object o : Golden.list(c.get("entries"))) {
          Map<String, Object> e = Golden.map(o);
          Map<String, float[]> vectors = new LinkedHashMap<String, float[]>();
          vectors.put((String) e.get("text"), floats(e.get("vector")));
          List<ResolvedOp> ops = new ArrayList<ResolvedOp>();
          ops.add(new ResolvedOp("ADD", null, (String) e.get("text"), null));
          store.applyUpdate((String) e.get("user_id"), ops, vectors, null, null, null, null, null, null, null, null);
        }
        Map<String, Object> u = Golden.map(c.get("update"));
        store.update((String) u.get("memory_id"), (String) u.get("text"), floats(u.get("vector")), null, null, null);
        for (Object o : Golden.list(c.get("queries"))) {
          Map<String, Object> q = Golden.map(o);
          List<Object> got = new ArrayList<Object>();
          for (MemoryStore.SearchHit h : store.search((String) q.get("user_id"), floats(q.get("vector")),
              ((Number) q.get("k")).intValue(), null, null)) {
            Map<String, Object> m = new LinkedHashMap<String, Object>();
            m.put("id", h.record.id);
            m.put("score", (double) h.score);
            got.add(m);
          }
          checkHits(report, (String) q.get("id"), q.get("expected"), got);
        }
      } finally {
        store.close();
      }
    }
    report.assertAllPassed();
  }
}
