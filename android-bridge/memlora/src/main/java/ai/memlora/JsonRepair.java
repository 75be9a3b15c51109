package ai.memlora;

import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

/**
 * Tolerant JSON recovery for model output: the Java counterpart of {@code json_repair.loads} for the
 * malformations small models really produce (and that the golden corpus pins down): output cut off
 * anywhere (unclosed strings, arrays, objects; a key without a value), single or curly quotes,
 * trailing, doubled or missing commas, unquoted keys and bare-word values, Python literals
 * ({@code True/False/None}), {@code //}, {@code #} and block comments, stray closing brackets, and
 * several top-level values (returned as a list unless they repeat the same shape, in which case the
 * last one wins, as json_repair does), and an object with no member and no ':' read again as an array.
 * The golden corpus includes two real outputs cut off after every character.
 *
 * <p>It never throws: whatever it cannot read is skipped. It does not reproduce json_repair's deeper
 * heuristics for unescaped quotes inside strings (e.g. {@code [{"a", "b"}]}, which json_repair reads
 * as {@code [{"a": "b"}]}); the parsers validate every value afterwards, so a different recovery can
 * only drop items, never invent them.
 */
final class JsonRepair {
  private static final String QUOTES = "\"'\u201c\u201d";

  /** Single-character escapes after a backslash, and what each stands for. */
  private static final String ESCAPES = "ntrbf\"'\\/";

  private static final String ESCAPED = "\n\t\r\b\f\"'\\/";

  private enum Ctx {
    ARRAY,
    OBJECT_KEY,
    OBJECT_VALUE
  }

  private final String s;
  private int i;
  private final List<Ctx> ctx = new ArrayList<Ctx>();
  private int depth;

  private JsonRepair(String s) {
    this.s = s;
  }

  /** {@code json_repair.loads(text)}: the repaired value, "" when nothing was found. */
  static Object loads(String text) {
    return new JsonRepair(text).top();
  }

  private Character at(int offset) {
    int k = i + offset;
    return k >= 0 && k < s.length() ? s.charAt(k) : null;
  }

  private Character at() {
    return at(0);
  }

  private Object top() {
    Object first = parseJson();
    if (i >= s.length()) {
      return first;
    }
    List<Object> values = new ArrayList<Object>();
    values.add(first);
    while (i < s.length()) {
      ctx.clear();
      boolean commaSeparated = nextIsCommaSeparated();
      Object j = parseJson();
      if (JsonValues.truthy(j)) {
        Object last = values.get(values.size() - 1);
        if (!commaSeparated && sameShape(last, j)) {
          values.remove(values.size() - 1);
        } else if (!JsonValues.truthy(last)) {
          values.remove(values.size() - 1);
        }
        values.add(j);
      } else {
        i++;
      }
    }
    return values.size() == 1 ? values.get(0) : values;
  }

  private boolean nextIsCommaSeparated() {
    int k = i;
    while (k < s.length() && PyStr.isSpace(s.charAt(k))) {
      k++;
    }
    if (k < s.length() && s.charAt(k) == ',') {
      return true;
    }
    k = i - 1;
    while (k >= 0 && PyStr.isSpace(s.charAt(k))) {
      k--;
    }
    return k >= 0 && s.charAt(k) == ',';
  }

  /** json_repair's ObjectComparer.is_same_object: same types, same keys, same list lengths. */
  static boolean sameShape(Object a, Object b) {
    if (a == null || b == null) {
      return a == b;
    }
    if (typeKey(a) != typeKey(b)) {
      return false;
    }
    if (a instanceof Map) {
      Map<?, ?> ma = (Map<?, ?>) a;
      Map<?, ?> mb = (Map<?, ?>) b;
      if (ma.size() != mb.size()) {
        return false;
      }
      for (Map.Entry<?, ?> e : ma.entrySet()) {
        if (!mb.containsKey(e.getKey()) || !sameShape(e.getValue(), mb.get(e.getKey()))) {
          return false;
        }
      }
      return true;
    }
    if (a instanceof List) {
      List<?> la = (List<?>) a;
      List<?> lb = (List<?>) b;
      if (la.size() != lb.size()) {
        return false;
      }
      for (int k = 0; k < la.size(); k++) {
        if (!sameShape(la.get(k), lb.get(k))) {
          return false;
        }
      }
    }
    return true;
  }

  private static int typeKey(Object v) {
    if (v instanceof Map) {
      return 1;
    } else if (v instanceof List) {
      return 2;
    } else if (v instanceof String) {
      return 3;
    } else if (v instanceof Boolean) {
      return 4;
    } else if (JsonValues.isInt(v)) {
      return 5;
    }
    return 6;
  }

  private void skipWhitespace() {
    while (i < s.length() && PyStr.isSpace(s.charAt(i))) {
      i++;
    }
  }

  private void skipWhitespaceAndComments() {
    while (true) {
      skipWhitespace();
      Character c = at();
      if (c == null) {
        return;
      }
      if (c != '#' && !(c == '/' && at(1) != null && (at(1) == '/' || at(1) == '*'))) {
        return;
      }
      skipComment();
    }
  }

  private void skipComment() {
    Character c = at();
    if (c == null) {
      return;
    }
    if (c == '#' || (c == '/' && at(1) != null && at(1) == '/')) {
      String stops = "\n\r";
      if (c == '#') {
        if (ctx.contains(Ctx.ARRAY)) {
          stops += "]";
        }
        if (ctx.contains(Ctx.OBJECT_VALUE)) {
          stops += "}";
        }
        if (ctx.contains(Ctx.OBJECT_KEY)) {
          stops += ":";
        }
      }
      while (i < s.length() && stops.indexOf(s.charAt(i)) < 0) {
        i++;
      }
    } else if (c == '/' && at(1) != null && at(1) == '*') {
      int end = s.indexOf("*/", i + 2);
      i = end < 0 ? s.length() : end + 2;
    } else if (c == '/') {
      i++;
    }
  }

  /** Enters a container; past 500 levels it is left at once and the rest of the text is skipped. */
  private boolean tooDeep() {
    if (++depth > 500) {
      i = s.length();
      depth--;
      return true;
    }
    return false;
  }

  /** parse_json: the next value; at the top level only containers (and comments) start one. */
  private Object parseJson() {
    while (true) {
      Character c = at();
      if (c == null) {
        return "";
      }
      if (c == '{') {
        i++;
        return parseObject();
      }
      if (c == '[') {
        i++;
        return parseArray();
      }
      if (!ctx.isEmpty() && (QUOTES.indexOf(c) >= 0 || Character.isLetter(c))) {
        return parseString();
      }
      if (!ctx.isEmpty() && (Character.isDigit(c) || c == '-' || c == '.')) {
        return parseNumber();
      }
      if (c == '#' || c == '/') {
        skipComment();
        if (!ctx.isEmpty()) {
          return "";
        }
        skipWhitespace();
        continue;
      }
      i++;
    }
  }

  private Object parseObject() {
    Map<String, Object> obj = new LinkedHashMap<String, Object>();
    if (tooDeep()) {
      return obj;
    }
    int start = i;
    while (true) {
      skipWhitespaceAndComments();
      Character c = at();
      if (c == null || c == '}') {
        break;
      }
      if (c == ',' || c == ']' || c == ':') {
        i++;
        continue;
      }
      ctx.add(Ctx.OBJECT_KEY);
      String key = parseKey();
      ctx.remove(ctx.size() - 1);
      if (key == null) {
        break; // the output ends inside the key: the member is dropped
      }
      skipWhitespaceAndComments();
      c = at();
      if (c == null) {
        break;
      }
      if (c != ':') {
        if (c == '}' || c == ',') {
          continue; // a key without a value
        }
        // a missing colon: read the value anyway
      } else {
        i++;
      }
      skipWhitespaceAndComments();
      Object value;
      if (at() == null || at() == '}' || at() == ',') {
        value = "";
      } else {
        ctx.add(Ctx.OBJECT_VALUE);
        value = parseJson();
        ctx.remove(ctx.size() - 1);
      }
      obj.remove(key); // Python dict: a repeated key keeps its first position
      obj.put(key, value);
      skipWhitespaceAndComments();
      if (at() != null && at() == ',') {
        i++;
      }
    }
    boolean closed = at() != null && at() == '}';
    if (closed) {
      i++;
    }
    depth--;
    if (obj.isEmpty() && setLike(start, closed)) {
      // json_repair: an object that ends with no member and no ':' in its body ({"a", "b"}, or {"id cut off)
      // is read again as an array
      i = start;
      ctx.add(Ctx.OBJECT_KEY);
      Object arr = parseArray();
      ctx.remove(ctx.size() - 1);
      return arr;
    }
    return obj;
  }

  /**
   * json_repair's test for an object that parsed empty: true when its text (from {@code start}, just after the
   * brace) holds something besides whitespace and comments, with no ':' outside quotes ({"a", "b"}, or {"id cut
   * off): it is then read again as an array. Its escaped-key case ({\"a\": 1}, re-read as an object) is not
   * reproduced.
   */
  private boolean setLike(int start, boolean closed) {
    int index = closed ? i : s.length() + 1; // json_repair's index after the object
    if (index - start <= 2) {
      return false;
    }
    if (closed && PyStr.strip(withoutComments(s.substring(start, index - 1))).isEmpty()) {
      return false;
    }
    String body = s.substring(start, Math.min(s.length(), index + 1));
    if (body.endsWith("}")) {
      body = body.substring(0, body.length() - 1);
    }
    body = PyStr.lstrip(withoutComments(PyStr.lstrip(body)));
    if (body.isEmpty()) {
      return false;
    }
    Character quote = null;
    int backslashes = 0;
    for (int k = 0; k < body.length(); k++) {
      char c = body.charAt(k);
      if (c == '\\') {
        backslashes++;
        continue;
      }
      if (quote != null) {
        if (c == quote && backslashes % 2 == 0) {
          quote = null;
        }
      } else if (QUOTES.indexOf(c) >= 0 && backslashes % 2 == 0) {
        quote = c;
      } else if (c == ':' && backslashes % 2 == 0) {
        return false;
      }
      backslashes = 0;
    }
    return true;
  }

  /** {@code body} without its {@code #}, {@code //} and block comments (quoted text kept as it is). */
  private static String withoutComments(String body) {
    StringBuilder out = new StringBuilder();
    Character quote = null;
    int backslashes = 0;
    int k = 0;
    while (k < body.length()) {
      char c = body.charAt(k);
      char next = k + 1 < body.length() ? body.charAt(k + 1) : '\0';
      if (c == '\\') {
        backslashes++;
        out.append(c);
        k++;
        continue;
      }
      if (quote != null) {
        out.append(c);
        if (c == quote && backslashes % 2 == 0) {
          quote = null;
        }
        backslashes = 0;
        k++;
        continue;
      }
      if (QUOTES.indexOf(c) >= 0 && backslashes % 2 == 0) {
        quote = c;
        out.append(c);
        backslashes = 0;
        k++;
        continue;
      }
      backslashes = 0;
      if (c == '#' || (c == '/' && next == '/')) {
        k += c == '/' ? 2 : 1;
        while (k < body.length() && body.charAt(k) != '\n' && body.charAt(k) != '\r') {
          k++;
        }
        continue;
      }
      if (c == '/' && next == '*') {
        k += 2;
        while (k < body.length() - 1 && !body.startsWith("*/", k)) {
          k++;
        }
        k = Math.min(k + 2, body.length());
        continue;
      }
      out.append(c);
      k++;
    }
    return out.toString();
  }

  /** A key, or null when the text ends before the key is complete. */
  private String parseKey() {
    Character c = at();
    if (c != null && QUOTES.indexOf(c) >= 0) {
      String body = quoted(c);
      if (i >= s.length()) {
        return null;
      }
      i++;
      return body;
    }
    int start = i;
    while (i < s.length() && ":,}".indexOf(s.charAt(i)) < 0) {
      i++;
    }
    if (i >= s.length()) {
      return null;
    }
    return PyStr.strip(s.substring(start, i));
  }

  private Object parseArray() {
    List<Object> arr = new ArrayList<Object>();
    if (tooDeep()) {
      return arr;
    }
    ctx.add(Ctx.ARRAY);
    while (true) {
      skipWhitespaceAndComments();
      Character c = at();
      if (c == null || c == ']' || c == '}') {
        break;
      }
      if (c == ',') {
        i++;
        continue;
      }
      Object value = parseJson();
      Character next = at();
      boolean strictlyEmpty =
          ("".equals(value))
              || (value instanceof List && ((List<?>) value).isEmpty())
              || (value instanceof Map && ((Map<?, ?>) value).isEmpty());
      if (strictlyEmpty && (next == null || (next != ']' && next != ','))) {
        i++;
      } else if ("...".equals(value) && at(-1) != null && at(-1) == '.') {
        // a stray "..." is ignored
      } else {
        arr.add(value);
      }
    }
    ctx.remove(ctx.size() - 1);
    i++; // the closing bracket (or whatever ended the array)
    depth--;
    return arr;
  }

  private Object parseString() {
    Character c = at();
    if (c != null && QUOTES.indexOf(c) < 0) {
      Object literal = literal();
      if (literal != NOT_LITERAL) {
        return literal;
      }
      return bareWord();
    }
    String body = quoted(c);
    if (i >= s.length()) {
      return rstrip(body); // cut off inside the string
    }
    i++;
    return body;
  }

  /**
   * The text after the opening quote {@code open} (at {@code i}), escapes decoded; stops on the matching
   * closing quote (not consumed) or at the end of the text.
   */
  private String quoted(char open) {
    char close = open == '\u201c' ? '\u201d' : open;
    i++;
    StringBuilder out = new StringBuilder();
    while (i < s.length() && s.charAt(i) != close) {
      if (s.charAt(i) == '\\' && i + 1 < s.length()) {
        i = appendEscape(out, i);
        continue;
      }
      out.append(s.charAt(i++));
    }
    return out.toString();
  }

  private static final Object NOT_LITERAL = new Object();

  private Object literal() {
    String[] names = {"true", "false", "null", "none"};
    Object[] values = {Boolean.TRUE, Boolean.FALSE, null, null};
    for (int k = 0; k < names.length; k++) {
      String name = names[k];
      if (i + name.length() > s.length()) {
        continue;
      }
      if (!s.substring(i, i + name.length()).toLowerCase(java.util.Locale.ROOT).equals(name)) {
        continue;
      }
      int end = i + name.length();
      char next = end < s.length() ? s.charAt(end) : ' ';
      if (end >= s.length() || PyStr.isSpace(next) || ",)]}".indexOf(next) >= 0) {
        i = end;
        return values[k];
      }
    }
    return NOT_LITERAL;
  }

  private String bareWord() {
    Ctx here = ctx.isEmpty() ? Ctx.OBJECT_VALUE : ctx.get(ctx.size() - 1);
    String stops = here == Ctx.ARRAY ? ",]" : ",}";
    int start = i;
    while (i < s.length() && stops.indexOf(s.charAt(i)) < 0 && s.charAt(i) != '\n') {
      i++;
    }
    return rstrip(s.substring(start, i));
  }

  private Object parseNumber() {
    int start = i;
    boolean inArray = !ctx.isEmpty() && ctx.get(ctx.size() - 1) == Ctx.ARRAY;
    StringBuilder num = new StringBuilder();
    while (i < s.length()) {
      char c = s.charAt(i);
      boolean numberChar = "0123456789-.eE/,_".indexOf(c) >= 0;
      boolean plus = c == '+' && num.length() > 0 && "eE".indexOf(num.charAt(num.length() - 1)) >= 0;
      if (!(numberChar || plus) || (inArray && c == ',')) {
        break;
      }
      if (c != '_') {
        num.append(c);
      }
      i++;
    }
    if (i < s.length() && Character.isLetter(s.charAt(i))) {
      i = start;
      return bareWord();
    }
    String n = num.toString();
    if (!n.isEmpty() && "+-eE/,".indexOf(n.charAt(n.length() - 1)) >= 0) {
      n = n.substring(0, n.length() - 1);
      i--;
    }
    if (n.indexOf(',') >= 0) {
      return n;
    }
    try {
      if (n.indexOf('.') >= 0 || n.indexOf('e') >= 0 || n.indexOf('E') >= 0) {
        return Double.parseDouble(n);
      }
      return JsonValues.integer(n);
    } catch (NumberFormatException e) {
      return n;
    }
  }

  /** Appends the escape at {@code k} (a backslash) and returns the index after it. */
  private int appendEscape(StringBuilder out, int k) {
    char e = s.charAt(k + 1);
    int simple = ESCAPES.indexOf(e);
    if (simple >= 0) {
      out.append(ESCAPED.charAt(simple));
      return k + 2;
    }
    if (e == 'u' && k + 6 <= s.length()) {
      try {
        out.append((char) Integer.parseInt(s.substring(k + 2, k + 6), 16));
        return k + 6;
      } catch (NumberFormatException ignored) {
        // not an escape: keep the text
      }
    }
    out.append('\\'); // not an escape: the backslash stays and the next character is read as text
    return k + 1;
  }

  private static String rstrip(String v) {
    int end = v.length();
    while (end > 0 && PyStr.isSpace(v.charAt(end - 1))) {
      end--;
    }
    return v.substring(0, end);
  }
}
