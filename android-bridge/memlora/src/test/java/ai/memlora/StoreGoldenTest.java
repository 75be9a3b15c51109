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

  @SuppressWarnings("unchecked")
  static List<String> strings(Object v) {
    return v == null ? null : (List<String>) v;
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
        vectors.put(e.getKey(), Golden.floats(e.getValue()));
      }
      MemoryStore.BatchEvents batch = store.applyUpdate(
          (String) step.get("user_id"), ops, vectors, (String) step.get("agent_id"), (String) step.get("run_id"),
          (String) step.get("timestamp"), strings(step.get("source_ids")), strings(step.get("image_refs")),
          Golden.map(step.get("metadata")), rejections(step.get("rejected")), (String) step.get("actor"));
      Map<String, Object> out = new LinkedHashMap<String, Object>();
      out.put("events", Golden.events(batch.events));
      out.put("batch", batch.batch);
      out.put("rejected", Golden.rejections(batch.rejected));
      return out;
    } else if (op.equals("search")) {
      return Golden.hits(store.search((String) step.get("user_id"), Golden.floats(step.get("vector")),
          ((Number) step.get("k")).intValue(), (String) step.get("agent_id"), (String) step.get("run_id")), false);
    } else if (op.equals("update")) {
      return Golden.event(store.update((String) step.get("memory_id"), (String) step.get("text"),
          Golden.floats(step.get("vector")), (String) step.get("timestamp"), Golden.map(step.get("metadata")),
          (String) step.get("actor")));
    } else if (op.equals("delete")) {
      return Golden.event(store.delete((String) step.get("memory_id"), (String) step.get("actor")));
    } else if (op.equals("delete_all")) {
      return Golden.events(store.deleteAll((String) step.get("user_id"), (String) step.get("agent_id"),
          (String) step.get("run_id"), (String) step.get("actor")));
    } else if (op.equals("reset")) {
      store.reset();
      return null;
    }
    throw new AssertionError("unknown store step " + op);
  }

  static Map<String, Object> snapshot(MemoryStore store, Map<String, Object> expected) {
    Map<String, Object> out = new LinkedHashMap<String, Object>();
    out.put("users", Golden.recordsByUser(store, Golden.map(expected.get("users")).keySet()));
    Map<String, Object> history = new LinkedHashMap<String, Object>();
    for (String memoryId : Golden.map(expected.get("history")).keySet()) {
      List<Object> rows = new ArrayList<Object>();
      for (MemoryStore.HistoryEntry h : store.history(memoryId)) {
        rows.add(Golden.historyEntry(h));
      }
      history.put(memoryId, rows);
    }
    out.put("history", history);
    out.put("rejections", Golden.rejectionEntries(store));
    out.put("batch_seq", store.batchSequence());
    return out;
  }

  static void checkVectors(Golden.Report report, String id, MemoryStore store, Map<String, Object> expected) {
    for (Map.Entry<String, Object> e : expected.entrySet()) {
      float[] got = store.vector(e.getKey());
      float[] want = Golden.floats(e.getValue());
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
    MemoryStore store = new MemoryStore(JdbcSqlDatabase.open(":memory:"), 4, Golden.counter("mem-%03d"),
        Golden.clock("2024-01-01T00:00:%02d+00:00"));
    try {
      for (Map<String, Object> c : Golden.cases("store.json")) {
        String id = (String) c.get("id");
        Map<String, Object> step = Golden.map(c.get("step"));
        try {
          Object result = run(store, step);
          if (c.containsKey("error")) {
            report.fail(id, "Python raised " + c.get("error") + " (" + c.get("message") + ") but Java did not");
          } else if ("search".equals(step.get("op"))) {
            Golden.checkHits(report, id, c.get("result"), result);
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
      MemoryStore store =
          new MemoryStore(JdbcSqlDatabase.open(":memory:"), dim, Golden.counter("r-%03d"), Golden.clock("t%d"));
      try {
        for (Object o : Golden.list(c.get("entries"))) {
          Map<String, Object> e = Golden.map(o);
          Map<String, float[]> vectors = new LinkedHashMap<String, float[]>();
          vectors.put((String) e.get("text"), Golden.floats(e.get("vector")));
          List<ResolvedOp> ops = new ArrayList<ResolvedOp>();
          ops.add(new ResolvedOp("ADD", null, (String) e.get("text"), null));
          store.applyUpdate((String) e.get("user_id"), ops, vectors, null, null, null, null, null, null, null, null);
        }
        Map<String, Object> u = Golden.map(c.get("update"));
        store.update((String) u.get("memory_id"), (String) u.get("text"), Golden.floats(u.get("vector")), null, null,
            null);
        for (Object o : Golden.list(c.get("queries"))) {
          Map<String, Object> q = Golden.map(o);
          List<Object> got = Golden.hits(store.search((String) q.get("user_id"), Golden.floats(q.get("vector")),
              ((Number) q.get("k")).intValue(), null, null), false);
          Golden.checkHits(report, (String) q.get("id"), q.get("expected"), got);
        }
      } finally {
        store.close();
      }
    }
    report.assertAllPassed();
  }
}
