package ai.memlora;

import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

/**
 * Tolerant JSON recovery for model output: the Java counterpart of {@code json_repair.loads} (json-repair 0.64, the
 * version pyproject.toml pins), rule for rule where small models' output needs it: output cut off anywhere (unclosed
 * strings, arrays, objects; a key without a value), single or curly quotes, trailing, doubled or missing commas and
 * colons, unquoted keys and bare-word values, Python literals ({@code True/False/None}), {@code //}, {@code #} and
 * block comments, stray closing brackets, several top-level values (returned as a list unless they repeat the same
 * shape, in which case the last one wins), an object with no member and no ':' read again as an array, a repeated
 * key inside an array starting a new object, a stray ':' where a key should start (the key is read from whatever
 * follows, across "}, {" too), a "[" where a key should start continuing the previous member's list, a top-level
 * object followed by ", " and a quoted key taking those members too, and json_repair's look-ahead for quotes inside
 * strings ({@code "Loves "Brave" by Sara"} keeps its inner quotes; {@code [{"a", "b"}]} reads as {@code [{"a":
 * "b"}]}), and German low quotes inside a string ({@code "Liebt \u201eBrave" von Sara"} is one string). This class
 * holds the structure (values, objects, arrays, numbers); the strings and the cursor are {@link JsonRepairStrings}.
 *
 * <p>It never throws: whatever it cannot read is skipped. The golden corpus (tests/android/android_golden.py) pins
 * it to Python's result on real-shaped outputs, on real outputs cut off after every character and on seeded random
 * edits of them. Also ported: json_repair's first steps (valid JSON as it is; once, a top-level container that is
 * valid JSON from there on, taken as is) and its deferred contexts (after an object re-read as an array, the next
 * value is read inside that object's key context). The parsers validate every value afterwards, so a different
 * recovery could only drop items, never invent them.
 */
final class JsonRepair extends JsonRepairStrings {
  private int depth;
  /** Where the last key parsed started (json_repair's rollback index). */
  private int keyStart;
  /**
   * json_repair's deferred contexts: an object re-read as an array leaves its OBJECT_KEY context to the next value
   * parsed through {@link #parseJson()}, which runs inside it (json_repair's {@code deferred_contexts}).
   */
  private final List<Ctx> deferred = new ArrayList<Ctx>();
  /** json_repair's {@code has_tried_valid_json_suffix}: the strict read of a top-level container is tried once. */
  private boolean triedValidSuffix;

  private JsonRepair(String s) {
    super(s);
  }

  /** {@code json_repair.loads(text)}: the repaired value, "" when nothing was found. */
  static Object loads(String text) {
    try {
      return StrictJson.loads(text); // json_repair's first step: valid JSON as it is
    } catch (StrictJson.Invalid | StackOverflowError e) {
      return new JsonRepair(text).top();
    }
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
      deferred.clear();
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


  /** Enters a container; past 500 levels it is left at once and the rest of the text is skipped. */
  private boolean tooDeep() {
    if (++depth > 500) {
      i = s.length();
      depth--;
      return true;
    }
    return false;
  }

  @Override
  Object parseValue() {
    return parseJson();
  }

  /** parse_json: the next value; at the top level only containers (and comments) start one. */
  private Object parseJson() {
    if (!deferred.isEmpty()) {
      int entered = deferred.size();
      ctx.addAll(deferred);
      deferred.clear();
      try {
        return parseJson();
      } finally {
        for (int k = 0; k < entered; k++) {
          ctx.remove(ctx.size() - 1);
        }
      }
    }
    while (true) {
      Character c = at();
      if (c == null) {
        return "";
      }
      if ((c == '{' || c == '[') && ctx.isEmpty() && !triedValidSuffix && containerHasNonCommaTrailingContent()) {
        // json_repair's valid-suffix read: once, a top-level container that is valid JSON from here is taken as is
        triedValidSuffix = true;
        int[] end = new int[1];
        try {
          Object value = StrictJson.rawDecode(s, i, end);
          i = end[0];
          return value;
        } catch (StrictJson.Invalid | StackOverflowError e) {
          // not valid from here (or nested too deep to read strictly): repaired below
        }
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

  /**
   * json_repair's {@code _initial_container_has_non_comma_trailing_content}: true away from the text's start; at its
   * start, true when the first container closes (brackets matched, outside double-quoted strings) and something other
   * than whitespace and a ',' follows it.
   */
  private boolean containerHasNonCommaTrailingContent() {
    if (i != 0) {
      return true;
    }
    List<Character> open = new ArrayList<Character>();
    boolean inString = false;
    boolean escaped = false;
    for (int k = 0; k < s.length(); k++) {
      char c = s.charAt(k);
      if (inString) {
        if (escaped) {
          escaped = false;
        } else if (c == '\\') {
          escaped = true;
        } else if (c == '"') {
          inString = false;
        }
        continue;
      }
      if (c == '"') {
        inString = true;
      } else if (c == '{' || c == '[') {
        open.add(c);
      } else if (c == '}' || c == ']') {
        if (open.isEmpty() || c != (open.remove(open.size() - 1) == '{' ? '}' : ']')) {
          return false;
        }
        if (open.isEmpty()) {
          int t = k + 1;
          while (t < s.length() && PyStr.isSpace(s.charAt(t))) {
            t++;
          }
          return t < s.length() && s.charAt(t) != ',';
        }
      }
    }
    return false;
  }

  private Object parseObject() {
    Map<String, Object> obj = new LinkedHashMap<String, Object>();
    if (tooDeep()) {
      return obj;
    }
    int start = i;
    boolean objectValue = current() == Ctx.OBJECT_VALUE;
    while (true) {
      skipWhitespaceAndComments();
      Character c = at();
      if (c == null || c == '}') {
        break;
      }
      if (c == ',') {
        i++;
        continue;
      }
      if (c == ':') {
        i++; // a ':' where a key should start: stepped over, and the key is read from whatever follows ("}, {" too)
      }
      ctx.add(Ctx.OBJECT_KEY);
      String key = parseKey(obj);
      ctx.remove(ctx.size() - 1);
      if (ctx.contains(Ctx.ARRAY) && obj.containsKey(key) && !objectValue && splitsOnRepeatedKey(keyStart)) {
        // a repeated key inside an array: the object ends before it and a new one starts there
        s = s.substring(0, keyStart) + "{" + s.substring(keyStart);
        i = keyStart;
        break;
      }
      skipWhitespaceAndComments();
      c = at();
      if (c == null || c == '}') {
        continue; // a key without a value
      }
      i++; // the ':' (json_repair steps over whatever stands there when the ':' is missing)
      skipWhitespaceAndComments();
      Object value;
      if (at() == null || at() == '}' || at() == ',') {
        value = "";
      } else {
        ctx.add(Ctx.OBJECT_VALUE);
        value = parseJson();
        ctx.remove(ctx.size() - 1);
      }
      obj.put(key, value); // as in a Python dict, a repeated key keeps its first position
      if (among(at(), ",'\"", false)) {
        i++;
      }
      if (at() != null && at() == ']' && ctx.contains(Ctx.ARRAY)) {
        break; // a "]" closes the object here (and is left for the array)
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
      deferred.add(Ctx.OBJECT_KEY);
      return arr;
    }
    if (!ctx.isEmpty() && at() != null && at() == '}' && current() != Ctx.OBJECT_KEY && current() != Ctx.OBJECT_VALUE) {
      i++; // an extra closing brace inside an array: skipped
    }
    if (ctx.isEmpty()) {
      // a top-level object followed by ", " and a quoted key: more members of this object ({"id": "0"}, "id": "1"})
      skipWhitespace();
      if (at() != null && at() == ',') {
        i++;
        skipWhitespace();
        if (at() != null && QUOTES.indexOf(at()) >= 0) {
          Object more = parseObject();
          if (more instanceof Map) {
            @SuppressWarnings("unchecked")
            Map<String, Object> members = (Map<String, Object>) more;
            obj.putAll(members); // as dict.update: a repeated key keeps its position and takes the new value
          }
        }
      }
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

  /** _should_split_duplicate_object: not when the repeated key is quoted, after a "," and before a ":". */
  private boolean splitsOnRepeatedKey(int rollback) {
    int back = rollback - i - 1;
    while (at(back) != null && PyStr.isSpace(at(back))) {
      back--;
    }
    Character prev = at(back);
    Character keyStartChar = at(rollback - i);
    Character next = at(scrollWs(0));
    return !(keyStartChar != null && QUOTES.indexOf(keyStartChar) >= 0 && prev != null && prev == ','
        && next != null && next == ':');
  }

  /** _parse_object_key: the next non-empty key (an empty one only right before ":" or "}"). */
  private String parseKey(Map<String, Object> obj) {
    String key = "";
    keyStart = i; // json_repair's rollback index, also when the text ends here (no key at all)
    while (at() != null) {
      keyStart = i;
      if (at() == '[' && key.isEmpty() && mergeArrayContinuation(obj)) {
        continue;
      }
      Object raw = parseString();
      key = raw instanceof String ? (String) raw : "";
      if (key.isEmpty()) {
        skipWhitespaceAndComments();
      }
      if (!key.isEmpty() || among(at(), ":}", false)) {
        break;
      }
    }
    return key;
  }

  /**
   * _merge_object_array_continuation: a "[" where a key should start, after a member whose value is a list, continues
   * that list ({@code {"facts": ["a"], ["b"]}} reads as {@code {"facts": ["a", "b"]}}); rows of a table stay rows.
   */
  @SuppressWarnings("unchecked")
  private boolean mergeArrayContinuation(Map<String, Object> obj) {
    Object previous = null;
    for (Object value : obj.values()) {
      previous = value;
    }
    if (!(previous instanceof List)) {
      return false;
    }
    List<Object> rows = (List<Object>) previous;
    i++;
    Object parsed = parseArray();
    if (parsed instanceof List) {
      List<Object> more = (List<Object>) parsed;
      Integer rowLength = sharedRowLength(rows);
      if (rowLength != null && rowLength > 0) {
        List<Object> tail = new ArrayList<Object>();
        while (!rows.isEmpty() && !(rows.get(rows.size() - 1) instanceof List)) {
          tail.add(0, rows.remove(rows.size() - 1));
        }
        if (!tail.isEmpty()) {
          if (tail.size() % rowLength == 0) {
            for (int k = 0; k < tail.size(); k += rowLength) {
              rows.add(new ArrayList<Object>(tail.subList(k, k + rowLength))); // values without their row's brackets
            }
          } else {
            rows.addAll(tail);
          }
        }
        if (!more.isEmpty()) {
          if (allLists(more)) {
            rows.addAll(more);
          } else {
            rows.add(more);
          }
        }
      } else {
        rows.addAll(more.size() == 1 && more.get(0) instanceof List ? (List<Object>) more.get(0) : more);
      }
    }
    skipWhitespaceAndComments();
    if (at() != null && at() == ',') {
      i++;
    }
    skipWhitespaceAndComments();
    return true;
  }

  /** _shared_row_length: the length every list in {@code rows} has, or null when there is none or they differ. */
  private static Integer sharedRowLength(List<Object> rows) {
    Integer length = null;
    for (Object item : rows) {
      if (item instanceof List) {
        int n = ((List<?>) item).size();
        if (length == null) {
          length = n;
        } else if (length != n) {
          return null;
        }
      }
    }
    return length;
  }

  private static boolean allLists(List<Object> items) {
    for (Object item : items) {
      if (!(item instanceof List)) {
        return false;
      }
    }
    return true;
  }

  private Object parseArray() {
    List<Object> arr = new ArrayList<Object>();
    if (tooDeep()) {
      return arr;
    }
    boolean objectValue = current() == Ctx.OBJECT_VALUE;
    boolean closedBeforeParentMember = false;
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
      Object value;
      if (QUOTES.indexOf(c) >= 0) {
        Character afterString = at(scrollWs(skipTo(String.valueOf(c), 1) + 1));
        if (afterString != null && afterString == ':') {
          // a string followed by ':' is an object member: an object that lost its '{', or the parent's next member
          if (objectValue && !arr.isEmpty() && allScalars(arr)) {
            closedBeforeParentMember = true;
            break;
          }
          value = parseObject();
        } else {
          value = parseString();
        }
      } else {
        value = parseJson();
      }
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
    if (!closedBeforeParentMember) {
      i++; // the closing bracket (or whatever ended the array)
    }
    depth--;
    return arr;
  }

  private static boolean allScalars(List<Object> items) {
    for (Object item : items) {
      if (item instanceof Map || item instanceof List) {
        return false;
      }
    }
    return true;
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
      return parseString();
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
}
