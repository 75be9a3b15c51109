package ai.memlora;

import java.math.BigInteger;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

/**
 * Python's {@code json.JSONDecoder().raw_decode(text, start)}: one strict JSON value starting exactly at
 * {@code start}, trailing text ignored. Values: {@link LinkedHashMap} (duplicate keys: last value wins,
 * first position kept), {@link ArrayList}, {@link String}, {@link Long} or {@link BigInteger}, {@link
 * Double} (incl. NaN/Infinity, as Python accepts), {@link Boolean}, {@code null}.
 */
final class StrictJson {
  /** Thrown when the text is not valid JSON at that position. */
  static final class Invalid extends Exception {
    private static final long serialVersionUID = 1L;

    Invalid(String message) {
      super(message, null, false, false);
    }
  }

  private static final int MAX_DEPTH = 900; // Python's recursion limit is about 1000 frames

  /** The bare words Python's decoder accepts (no two share a first character), and their values. */
  private static final String[] LITERALS = {"null", "true", "false", "NaN", "Infinity", "-Infinity"};

  private static final Object[] LITERAL_VALUES = {
    null, Boolean.TRUE, Boolean.FALSE, Double.NaN, Double.POSITIVE_INFINITY, Double.NEGATIVE_INFINITY
  };

  /** Single-character escapes after a backslash, and what each stands for. */
  private static final String ESCAPES = "\"\\/bfnrt";

  private static final String ESCAPED = "\"\\/\b\f\n\r\t";

  private final String s;
  private int i;
  private int depth;

  private StrictJson(String s, int start) {
    this.s = s;
    this.i = start;
  }

  /** Python's {@code json.loads}: one value, surrounded by optional whitespace, or throws {@link Invalid}. */
  static Object loads(String text) throws Invalid {
    int start = skipWs(text, 0);
    int[] end = new int[1];
    Object value = rawDecode(text, start, end);
    if (skipWs(text, end[0]) != text.length()) {
      throw new Invalid("Extra data at char " + end[0]);
    }
    return value;
  }

  private static int skipWs(String s, int i) {
    while (i < s.length() && " \t\n\r".indexOf(s.charAt(i)) >= 0) {
      i++;
    }
    return i;
  }

  /** The value at {@code start}, or throws {@link Invalid}. */
  static Object rawDecode(String text, int start) throws Invalid {
    return new StrictJson(text, start).value();
  }

  /** Returns the value and the end index in {@code end[0]}. */
  static Object rawDecode(String text, int start, int[] end) throws Invalid {
    StrictJson p = new StrictJson(text, start);
    Object v = p.value();
    end[0] = p.i;
    return v;
  }

  private Invalid fail(String what) {
    return new Invalid(what + " at char " + i);
  }

  private void ws() {
    while (i < s.length()) {
      char c = s.charAt(i);
      if (c == ' ' || c == '\t' || c == '\n' || c == '\r') {
        i++;
      } else {
        break;
      }
    }
  }

  private boolean startsWith(String lit) {
    return s.startsWith(lit, i);
  }

  private Object value() throws Invalid {
    if (i >= s.length()) {
      throw fail("Expecting value");
    }
    char c = s.charAt(i);
    switch (c) {
      case '"':
        i++;
        return string();
      case '{':
        i++;
        return object();
      case '[':
        i++;
        return array();
      default:
        break;
    }
    for (int k = 0; k < LITERALS.length; k++) {
      if (startsWith(LITERALS[k])) {
        i += LITERALS[k].length();
        return LITERAL_VALUES[k];
      }
    }
    Object n = number();
    if (n == null) {
      throw fail("Expecting value");
    }
    return n;
  }

  private static boolean digit(char c) {
    return c >= '0' && c <= '9';
  }

  /** NUMBER_RE = (-?(?:0|[1-9]\d*))(\.\d+)?([eE][-+]?\d+)? or null when nothing matches. */
  private Object number() {
    int start = i;
    int j = i;
    if (j < s.length() && s.charAt(j) == '-') {
      j++;
    }
    if (j >= s.length() || !digit(s.charAt(j))) {
      return null;
    }
    if (s.charAt(j) == '0') {
      j++;
    } else {
      while (j < s.length() && digit(s.charAt(j))) {
        j++;
      }
    }
    int intEnd = j;
    boolean isFloat = false;
    if (j + 1 < s.length() && s.charAt(j) == '.' && digit(s.charAt(j + 1))) {
      j += 2;
      while (j < s.length() && digit(s.charAt(j))) {
        j++;
      }
      isFloat = true;
    }
    if (j < s.length() && (s.charAt(j) == 'e' || s.charAt(j) == 'E')) {
      int k = j + 1;
      if (k < s.length() && (s.charAt(k) == '-' || s.charAt(k) == '+')) {
        k++;
      }
      if (k < s.length() && digit(s.charAt(k))) {
        while (k < s.length() && digit(s.charAt(k))) {
          k++;
        }
        j = k;
        isFloat = true;
      }
    }
    i = j;
    String text = s.substring(start, j);
    if (isFloat) {
      return Double.parseDouble(text);
    }
    return JsonValues.integer(s.substring(start, intEnd));
  }

  private String string() throws Invalid {
    StringBuilder out = new StringBuilder();
    while (true) {
      if (i >= s.length()) {
        throw fail("Unterminated string");
      }
      char c = s.charAt(i++);
      if (c == '"') {
        return out.toString();
      }
      if (c < 0x20) {
        throw fail("Invalid control character");
      }
      if (c != '\\') {
        out.append(c);
        continue;
      }
      if (i >= s.length()) {
        throw fail("Unterminated string");
      }
      char e = s.charAt(i++);
      int simple = ESCAPES.indexOf(e);
      if (simple >= 0) {
        out.append(ESCAPED.charAt(simple));
        continue;
      }
      if (e != 'u') {
        throw fail("Invalid \\escape");
      }
      int cp = hex4();
      if (cp >= 0xd800 && cp <= 0xdbff && startsWith("\\u")) {
        int save = i;
        i += 2;
        int low = hex4();
        if (low >= 0xdc00 && low <= 0xdfff) {
          out.appendCodePoint(0x10000 + ((cp - 0xd800) << 10) + (low - 0xdc00));
          continue;
        }
        i = save;
      }
      out.append((char) cp);
    }
  }

  private int hex4() throws Invalid {
    if (i + 4 > s.length()) {
      throw fail("Invalid \\uXXXX escape");
    }
    int v = 0;
    for (int k = 0; k < 4; k++) {
      int d = Character.digit(s.charAt(i + k), 16);
      if (d < 0 || s.charAt(i + k) > 'f') {
        throw fail("Invalid \\uXXXX escape");
      }
      v = v * 16 + d;
    }
    i += 4;
    return v;
  }

  /** Enters a container; true when it is empty (its {@code close} follows at once and is consumed). */
  private boolean open(char close) throws Invalid {
    if (++depth > MAX_DEPTH) {
      throw fail("too deep");
    }
    ws();
    return closes(close);
  }

  /** When {@code close} is next: consumes it, leaves the container and returns true. */
  private boolean closes(char close) {
    if (i < s.length() && s.charAt(i) == close) {
      i++;
      depth--;
      return true;
    }
    return false;
  }

  /** After a member: true at the container's end, else consumes the comma (and whitespace) before the next. */
  private boolean endOrComma(char close) throws Invalid {
    ws();
    if (closes(close)) {
      return true;
    }
    if (i >= s.length() || s.charAt(i) != ',') {
      throw fail("Expecting ',' delimiter");
    }
    i++;
    ws();
    return false;
  }

  private Map<String, Object> object() throws Invalid {
    Map<String, Object> out = new LinkedHashMap<String, Object>();
    if (open('}')) {
      return out;
    }
    while (true) {
      if (i >= s.length() || s.charAt(i) != '"') {
        throw fail("Expecting property name enclosed in double quotes");
      }
      i++;
      String key = string();
      ws();
      if (i >= s.length() || s.charAt(i) != ':') {
        throw fail("Expecting ':' delimiter");
      }
      i++;
      ws();
      out.put(key, value());
      if (endOrComma('}')) {
        return out;
      }
    }
  }

  private List<Object> array() throws Invalid {
    List<Object> out = new ArrayList<Object>();
    if (open(']')) {
      return out;
    }
    while (true) {
      out.add(value());
      if (endOrComma(']')) {
        return out;
      }
    }
  }
}
