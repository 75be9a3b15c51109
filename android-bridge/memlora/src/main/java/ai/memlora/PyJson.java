package ai.memlora;

import java.util.List;
import java.util.Map;

/**
 * Python's {@code json.dumps} for the values the runtime renders into prompts and store rows: strings,
 * integers, floats (Python's shortest repr), booleans, null, lists and (insertion-ordered) maps.
 */
public final class PyJson {
  private PyJson() {}

  /** {@code json.dumps(value, ensure_ascii=False, separators=(", ", ": "))}: the prompt rendering. */
  public static String dumpsPrompt(Object value) {
    StringBuilder out = new StringBuilder();
    write(out, value, ", ", ": ", false);
    return out.toString();
  }

  /** {@code json.dumps(value, ensure_ascii=False)} with the default separators (the store's JSON columns). */
  public static String dumpsDefault(Object value) {
    return dumps(value, ", ", ": ", false);
  }

  /** {@code json.dumps(value, ensure_ascii=..., separators=(itemSep, keySep))}. */
  public static String dumps(Object value, String itemSep, String keySep, boolean ensureAscii) {
    StringBuilder out = new StringBuilder();
    write(out, value, itemSep, keySep, ensureAscii);
    return out.toString();
  }

  private static void write(StringBuilder out, Object value, String itemSep, String keySep, boolean ascii) {
    if (value == null) {
      out.append("null");
    } else if (value instanceof String) {
      quote(out, (String) value, ascii);
    } else if (value instanceof Boolean) {
      out.append(((Boolean) value) ? "true" : "false");
    } else if (value instanceof Integer || value instanceof Long || value instanceof Short) {
      out.append(((Number) value).longValue());
    } else if (value instanceof java.math.BigInteger) {
      out.append(value.toString());
    } else if (value instanceof Double || value instanceof Float) {
      double d = ((Number) value).doubleValue();
      if (Double.isNaN(d)) {
        out.append("NaN");
      } else if (Double.isInfinite(d)) {
        out.append(d > 0 ? "Infinity" : "-Infinity");
      } else {
        out.append(PyRepr.floatRepr(d));
      }
    } else if (value instanceof Map) {
      out.append('{');
      boolean first = true;
      for (Map.Entry<?, ?> e : ((Map<?, ?>) value).entrySet()) {
        if (!first) {
          out.append(itemSep);
        }
        first = false;
        quote(out, String.valueOf(e.getKey()), ascii);
        out.append(keySep);
        write(out, e.getValue(), itemSep, keySep, ascii);
      }
      out.append('}');
    } else if (value instanceof List) {
      out.append('[');
      boolean first = true;
      for (Object item : (List<?>) value) {
        if (!first) {
          out.append(itemSep);
        }
        first = false;
        write(out, item, itemSep, keySep, ascii);
      }
      out.append(']');
    } else {
      throw new IllegalArgumentException("PyJson cannot render " + value.getClass().getName());
    }
  }

  /** The characters Python writes as a backslash and one letter, and that letter. */
  private static final String ESCAPED = "\"\\\n\r\t\b\f";

  private static final String ESCAPES = "\"\\nrtbf";

  /** Python's string escaping: {@code "}, {@code \}, control characters; non-ASCII kept unless ascii. */
  static void quote(StringBuilder out, String s, boolean ascii) {
    out.append('"');
    for (int i = 0; i < s.length(); i++) {
      char c = s.charAt(i);
      int simple = ESCAPED.indexOf(c);
      if (simple >= 0) {
        out.append('\\').append(ESCAPES.charAt(simple));
      } else if (c < 0x20 || (ascii && c > 0x7e)) {
        out.append(String.format("\\u%04x", (int) c));
      } else {
        out.append(c);
      }
    }
    out.append('"');
  }
}
