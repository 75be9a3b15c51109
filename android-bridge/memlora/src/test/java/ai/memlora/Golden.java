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
          "system property memlora.golden is not set: run `memlora-export golden -o DIR` and pass -Dmemlora.golden=DIR");
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
    if (v instanceof UpdateOp) {
      UpdateOp op = (UpdateOp) v;
      Map<String, Object> m = typed("UpdateOp");
      m.put("id", op.id);
      m.put("text", op.text);
      m.put("event", op.event);
      m.put("old_memory", op.oldMemory);
      return m;
    }
    if (v instanceof VqaAnswer) {
      VqaAnswer a = (VqaAnswer) v;
      Map<String, Object> m = typed("VQAAnswer");
      m.put("answer", a.answer);
      m.put("reason", a.reason);
      return m;
    }
    if (v instanceof ResolvedOp) {
      ResolvedOp r = (ResolvedOp) v;
      Map<String, Object> m = typed("ResolvedOp");
      m.put("event", r.event);
      m.put("memory_id", r.memoryId);
      m.put("text", r.text);
      m.put("old_text", r.oldText);
      return m;
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

  private static Map<String, Object> typed(String name) {
    Map<String, Object> m = new LinkedHashMap<String, Object>();
    m.put("__type__", name);
    return m;
  }

  static List<Object> rejections(List<Rejection> rejected) {
    List<Object> out = new ArrayList<Object>();
    for (Rejection r : rejected) {
      Map<String, Object> m = new LinkedHashMap<String, Object>();
      m.put("item", jsonable(r.item));
      m.put("reason", r.reason);
      out.add(m);
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
