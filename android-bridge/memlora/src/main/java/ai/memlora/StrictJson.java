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

  private final String s;
  private int i;
  private int depth;

  private StrictJson(String s, int start) {
    this.s = s;
    this.i = start;
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
      case 'n':
        if (startsWith("null")) {
          i += 4;
          return null;
        }
        break;
      case 't':
        if (startsWith("true")) {
          i += 4;
          return Boolean.TRUE;
        }
        break;
      case 'f':
        if (startsWith("false")) {
          i += 5;
          return Boolean.FALSE;
        }
        break;
      case 'N':
        if (startsWith("NaN")) {
          i += 3;
          return Double.NaN;
        }
        break;
      case 'I':
        if (startsWith("Infinity")) {
          i += 8;
          return Double.POSITIVE_INFINITY;
        }
        break;
      case '-':
        if (startsWith("-Infinity")) {
          i += 9;
          return Double.NEGATIVE_INFINITY;
        }
        break;
      default:
        break;
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
      switch (e) {
        case '"':
          out.append('"');
          break;
        case '\\':
          out.append('\\');
          break;
        case '/':
          out.append('/');
          break;
        case 'b':
          out.append('\b');
          break;
        case 'f':
          out.append('\f');
          break;
        case 'n':
          out.append('\n');
          break;
        case 'r':
          out.append('\r');
          break;
        case 't':
          out.append('\t');
          break;
        case 'u':
          {
            int cp = hex4();
            if (cp >= 0xd800 && cp <= 0xdbff && startsWith("\\u")) {
              int save = i;
              i += 2;
              int low = hex4();
              if (low >= 0xdc00 && low <= 0xdfff) {
                out.appendCodePoint(0x10000 + ((cp - 0xd800) << 10) + (low - 0xdc00));
                break;
              }
              i = save;
            }
            out.append((char) cp);
            break;
          }
        default:
          throw fail("Invalid \\escape");
      }
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

  private Map<String, Object> object() throws Invalid {
    if (++depth > MAX_DEPTH) {
      throw fail("too deep");
    }
    Map<String, Object> out = new LinkedHashMap<String, Object>();
    ws();
    if (i < s.length() && s.charAt(i) == '}') {
      i++;
      depth--;
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
      ws();
      if (i < s.length() && s.charAt(i) == '}') {
        i++;
        depth--;
        return out;
      }
      if (i >= s.length() || s.charAt(i) != ',') {
        throw fail("Expecting ',' delimiter");
      }
      i++;
      ws();
    }
  }

  private List<Object> array() throws Invalid {
    if (++depth > MAX_DEPTH) {
      throw fail("too deep");
    }
    List<Object> out = new ArrayList<Object>();
    ws();
    if (i < s.length() && s.charAt(i) == ']') {
      i++;
      depth--;
      return out;
    }
    while (true) {
      out.add(value());
      ws();
      if (i < s.length() && s.charAt(i) == ']') {
        i++;
        depth--;
        return out;
      }
      if (i >= s.length() || s.charAt(i) != ',') {
        throw fail("Expecting ',' delimiter");
      }
      i++;
      ws();
    }
  }
}
