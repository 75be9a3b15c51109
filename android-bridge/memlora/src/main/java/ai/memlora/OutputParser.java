package ai.memlora;

import java.math.BigInteger;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.Collections;
import java.util.HashSet;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.Set;
import java.util.regex.Matcher;
import java.util.regex.Pattern;

/**
 * Tolerant parsing of model output, a mirror of {@code memlora.runtime.parsing}: never throws on any
 * string, never invents an operation. Three steps: {@link #cleanOutput} (reasoning and code fences
 * removed), {@link #findJson} (strict JSON at each {@code {}/{@code [} start, then {@link JsonRepair}),
 * then item-by-item schema validation with the same rejection reasons as Python.
 */
public final class OutputParser {
  private OutputParser() {}

  /** The four memory operations (Mem0's events). */
  public static final List<String> EVENTS =
      Collections.unmodifiableList(Arrays.asList("ADD", "UPDATE", "DELETE", "NONE"));

  /** How many {@code {}/{@code [} start positions {@link #findJson} tries per pass. */
  public static final int MAX_CANDIDATES = 16;

  private static final int CI = Pattern.CASE_INSENSITIVE | Pattern.UNICODE_CASE;
  private static final Pattern THINK_BLOCK = Pattern.compile("<think>.*?</think>", Pattern.DOTALL | CI);
  private static final Pattern THINK_OPEN = Pattern.compile("<think>", CI);
  private static final Pattern THINK_CLOSE = Pattern.compile("</think>", CI);
  private static final Pattern HARMONY_FINAL =
      Pattern.compile(
          "<\\|channel\\|>\\s*final\\s*(?:<\\|constrain\\|>\\s*\\w+\\s*)?<\\|message\\|>",
          CI | Pattern.UNICODE_CHARACTER_CLASS);
  private static final Pattern HARMONY_TOKEN = Pattern.compile("<\\|[a-z_]+\\|>", CI);
  private static final String GPT_OSS_FINAL = "assistantfinal";
  private static final Pattern GPT_OSS_ANALYSIS = Pattern.compile("analysis[A-Z\"'(\\[]");
  /** A fence opens at a line's start and closes at a line's start or end: ``` inside a JSON string is text. */
  private static final Pattern FENCE =
      Pattern.compile("(?:\\A|(?<=\\n))[ \\t]*```[ \\t]*[A-Za-z0-9_+-]*[ \\t]*(?:\\r?\\n|(?=[{\\[]))(.*?)"
          + "(?:(?<=\\n)[ \\t]*```|```[ \\t]*(?=\\r?\\n|\\z)|\\z)", Pattern.DOTALL);
  private static final Pattern WORD =
      Pattern.compile("^[\"'`*]*([\\w-]+)[\"'`*.!?]*$", Pattern.UNICODE_CHARACTER_CLASS);

  /** Marks an absent key (Python's {@code _NOTHING}); JSON null is Java null. */
  private static final Object NOTHING = new Object();

  /** Something that accepts or refuses a candidate JSON value. */
  public interface Accept {
    boolean test(Object value);
  }

  // ------------------------------------------------------------------------------------------ cleaning

  /** Removes a reasoning model's thinking and returns the answer part, stripped. */
  public static String stripReasoning(String text) {
    if (text == null) {
      return "";
    }
    String out = THINK_BLOCK.matcher(text).replaceAll("");
    Matcher opened = THINK_OPEN.matcher(out);
    if (opened.find()) {
      out = out.substring(0, opened.start());
    }
    Matcher close = THINK_CLOSE.matcher(out);
    int lastCloseEnd = -1;
    while (close.find()) {
      lastCloseEnd = close.end();
    }
    if (lastCloseEnd >= 0) {
      out = out.substring(lastCloseEnd);
    }
    if (out.toLowerCase(Locale.ROOT).contains("<|channel|>")) {
      Matcher fin = HARMONY_FINAL.matcher(out);
      int lastFinalEnd = -1;
      while (fin.find()) {
        lastFinalEnd = fin.end();
      }
      out = lastFinalEnd >= 0 ? out.substring(lastFinalEnd) : "";
    }
    out = HARMONY_TOKEN.matcher(out).replaceAll("");
    String stripped = PyStr.lstrip(out);
    if (stripped.contains(GPT_OSS_FINAL)
        && (stripped.startsWith("analysis")
            || stripped.startsWith("assistant")
            || stripped.startsWith("commentary"))) {
      out = stripped.substring(stripped.lastIndexOf(GPT_OSS_FINAL) + GPT_OSS_FINAL.length());
    } else if (GPT_OSS_ANALYSIS.matcher(stripped).lookingAt()) {
      out = "";
    }
    return PyStr.strip(out);
  }

  /** The content of the first line-level code fence holding {@code {} or {@code [}, or the text unchanged. */
  public static String stripCodeFences(String text) {
    Matcher m = FENCE.matcher(text);
    while (m.find()) {
      String body = m.group(1);
      if (body.indexOf('{') >= 0 || body.indexOf('[') >= 0) {
        return PyStr.strip(body);
      }
    }
    return text;
  }

  /** {@code stripCodeFences(stripReasoning(text))}: what the JSON is searched in. */
  public static String cleanOutput(String text) {
    return stripCodeFences(stripReasoning(text));
  }

  // ------------------------------------------------------------------------------------ finding JSON

  private static List<Integer> starts(String text) {
    List<Integer> out = new ArrayList<Integer>();
    for (int k = 0; k < text.length() && out.size() < MAX_CANDIDATES; k++) {
      char c = text.charAt(k);
      if (c == '{' || c == '[') {
        out.add(k);
      }
    }
    return out;
  }

  private static List<Object> repaired(String text, int start) {
    Object value;
    try {
      value = JsonRepair.loads(text.substring(start));
    } catch (RuntimeException | StackOverflowError e) {
      return Collections.emptyList(); // this module promises never to throw
    }
    if (text.charAt(start) == '{' && value instanceof List) {
      return new ArrayList<Object>((List<?>) value);
    }
    return Collections.singletonList(value);
  }

  /** The first JSON value in {@code text} that {@code accept} takes (strict pass, then repair pass), or null. */
  public static Object findJson(String text, Accept accept, boolean topLevel) {
    Object found = findJsonOr(text, accept, topLevel, NOTHING);
    return found == NOTHING ? null : found;
  }

  private static Object findJsonOr(String text, Accept accept, Object none) {
    return findJsonOr(text, accept, false, none);
  }

  /** {@code topLevel}: only starts before the first {@code {} (a bare list is never taken from inside an object). */
  private static Object findJsonOr(String text, Accept accept, boolean topLevel, Object none) {
    if (text == null || text.isEmpty()) {
      return none;
    }
    List<Integer> starts = starts(text);
    int firstBrace = text.indexOf('{');
    if (topLevel && firstBrace >= 0) {
      List<Integer> before = new ArrayList<Integer>();
      for (int start : starts) {
        if (start < firstBrace) {
          before.add(start);
        }
      }
      starts = before;
    }
    for (int start : starts) {
      Object value;
      try {
        value = StrictJson.rawDecode(text, start);
      } catch (StrictJson.Invalid | StackOverflowError e) {
        continue;
      }
      if (accept.test(value)) {
        return value;
      }
    }
    for (int start : starts) {
      for (Object value : repaired(text, start)) {
        if (accept.test(value)) {
          return value;
        }
      }
    }
    return none;
  }

  /** {@code obj[name]} with a case-insensitive, whitespace-tolerant key match ({@code NOTHING} when absent). */
  private static Object key(Map<?, ?> obj, String name) {
    if (obj.containsKey(name)) {
      return obj.get(name);
    }
    for (Map.Entry<?, ?> e : obj.entrySet()) {
      if (e.getKey() instanceof String
          && PyStr.strip((String) e.getKey()).toLowerCase(Locale.ROOT).equals(name)) {
        return e.getValue();
      }
    }
    return NOTHING;
  }

  private static Accept hasKey(final String name) {
    return new Accept() {
      @Override
      public boolean test(Object v) {
        return v instanceof Map && key((Map<?, ?>) v, name) != NOTHING;
      }
    };
  }

  private static final Accept IS_LIST =
      new Accept() {
        @Override
        public boolean test(Object v) {
          return v instanceof List;
        }
      };

  private static <T> ParseResult<T> noJson(String text, String cleaned, T empty, String what) {
    String reason;
    if (!PyStr.strip(cleaned).isEmpty()) {
      reason = "no " + what + " JSON found";
    } else if (text != null && !PyStr.strip(text).isEmpty()) {
      reason = "nothing left after removing reasoning and formatting";
    } else {
      reason = "empty output";
    }
    Object item = text != null ? text : "None";
    return new ParseResult<T>(empty, Collections.singletonList(new Rejection(item, reason)), false, cleaned);
  }

  // ------------------------------------------------------------------------------------------- facts

  /** Extraction output to fact strings. */
  public static ParseResult<List<String>> parseFacts(String text) {
    String cleaned = text != null ? cleanOutput(text) : "";
    Object payload = findJsonOr(cleaned, hasKey("facts"), NOTHING);
    if (payload == NOTHING) {
      payload = findJsonOr(cleaned, IS_LIST, true, NOTHING);
    }
    if (payload == NOTHING) {
      return noJson(text, cleaned, Collections.<String>emptyList(), "facts");
    }
    Object items = payload instanceof Map ? key((Map<?, ?>) payload, "facts") : payload;
    if (!(items instanceof List)) {
      return new ParseResult<List<String>>(
          Collections.<String>emptyList(),
          Collections.singletonList(new Rejection(items, "'facts' is not a list")),
          false,
          cleaned);
    }
    List<String> facts = new ArrayList<String>();
    Set<String> seen = new HashSet<String>();
    List<Rejection> rejected = new ArrayList<Rejection>();
    for (Object item : (List<?>) items) {
      if (!(item instanceof String)) {
        rejected.add(new Rejection(item, "fact is a " + PyRepr.typeName(item) + ", not a string"));
        continue;
      }
      String fact = PyStr.strip((String) item);
      if (fact.isEmpty()) {
        rejected.add(new Rejection(item, "empty fact"));
      } else if (seen.contains(fact)) {
        rejected.add(new Rejection(item, "duplicate fact"));
      } else {
        seen.add(fact);
        facts.add(fact);
      }
    }
    return new ParseResult<List<String>>(facts, rejected, rejected.isEmpty(), cleaned);
  }

  // ---------------------------------------------------------------------------------- memory update

  /** A prompt id as a string; null when absent/empty; NOTHING when of an unusable type. */
  private static Object normId(Object raw) {
    if (raw == null || raw == NOTHING) {
      return null;
    }
    if (raw instanceof Boolean) {
      return NOTHING;
    }
    if (JsonValues.isInt(raw)) {
      return raw instanceof BigInteger ? raw.toString() : String.valueOf(((Number) raw).longValue());
    }
    if (JsonValues.isFloat(raw)) {
      double d = ((Number) raw).doubleValue();
      if (Double.isNaN(d) || Double.isInfinite(d) || d != Math.rint(d)) {
        return NOTHING;
      }
      return JsonValues.integralFloatToString(d);
    }
    if (raw instanceof String) {
      String s = PyStr.strip((String) raw);
      return s.isEmpty() ? null : s;
    }
    return NOTHING;
  }

  static Object validateOp(Object item) {
    if (!(item instanceof Map)) {
      return new Rejection(item, "operation is a " + PyRepr.typeName(item) + ", not an object");
    }
    Map<?, ?> op = (Map<?, ?>) item;
    Object rawEvent = key(op, "event");
    if (!(rawEvent instanceof String)
        || !EVENTS.contains(PyStr.strip((String) rawEvent).toUpperCase(Locale.ROOT))) {
      return new Rejection(
          item,
          "event " + PyRepr.repr(rawEvent == NOTHING ? null : rawEvent)
              + " is not one of ADD, UPDATE, DELETE, NONE");
    }
    String event = PyStr.strip((String) rawEvent).toUpperCase(Locale.ROOT);
    Object opId = normId(key(op, "id"));
    Object rawText = key(op, "text");
    String text = rawText instanceof String ? PyStr.strip((String) rawText) : null;
    Object old = key(op, "old_memory");
    String oldMemory = old instanceof String ? (String) old : null;
    if ((event.equals("ADD") || event.equals("UPDATE")) && (text == null || text.isEmpty())) {
      return new Rejection(item, event + " without a non-empty text");
    }
    if (event.equals("UPDATE") || event.equals("DELETE")) {
      if (opId == NOTHING) {
        return new Rejection(
            item, event + " id " + PyRepr.repr(key(op, "id")) + " is not a string or integer");
      }
      if (opId == null) {
        return new Rejection(item, event + " without an id");
      }
    }
    if (opId == NOTHING) {
      opId = null;
    }
    return new UpdateOp((String) opId, text == null ? "" : text, event, oldMemory);
  }

  private static boolean looksLikeOp(Object v) {
    return v instanceof Map && key((Map<?, ?>) v, "event") != NOTHING;
  }

  /** Update output to {@link UpdateOp}s. */
  public static ParseResult<List<UpdateOp>> parseMemoryUpdate(String text) {
    String cleaned = text != null ? cleanOutput(text) : "";
    Object payload = findJsonOr(cleaned, hasKey("memory"), NOTHING);
    if (payload == NOTHING) {
      payload = findJsonOr(cleaned, IS_LIST, true, NOTHING);
    }
    if (payload == NOTHING) {
      payload =
          findJsonOr(
              cleaned,
              new Accept() {
                @Override
                public boolean test(Object v) {
                  return looksLikeOp(v);
                }
              },
              NOTHING);
    }
    if (payload == NOTHING) {
      return noJson(text, cleaned, Collections.<UpdateOp>emptyList(), "memory");
    }
    Object items;
    if (payload instanceof Map && key((Map<?, ?>) payload, "memory") != NOTHING) {
      items = key((Map<?, ?>) payload, "memory");
    } else if (payload instanceof Map) {
      items = Collections.singletonList(payload);
    } else {
      items = payload;
    }
    if (!(items instanceof List)) {
      return new ParseResult<List<UpdateOp>>(
          Collections.<UpdateOp>emptyList(),
          Collections.singletonList(new Rejection(items, "'memory' is not a list")),
          false,
          cleaned);
    }
    List<UpdateOp> ops = new ArrayList<UpdateOp>();
    List<Rejection> rejected = new ArrayList<Rejection>();
    for (Object item : (List<?>) items) {
      Object result = validateOp(item);
      if (result instanceof Rejection) {
        rejected.add((Rejection) result);
      } else {
        ops.add((UpdateOp) result);
      }
    }
    return new ParseResult<List<UpdateOp>>(ops, rejected, rejected.isEmpty(), cleaned);
  }

  // --------------------------------------------------------------------------------------------- VQA

  /** VQA output to a {@link VqaAnswer} (null when none could be read). */
  public static ParseResult<VqaAnswer> parseVqa(String text) {
    String cleaned = text != null ? cleanOutput(text) : "";
    Object payload = findJsonOr(cleaned, hasKey("answer"), NOTHING);
    if (payload == NOTHING) {
      Matcher word = WORD.matcher(PyStr.strip(cleaned));
      if (word.matches()) {
        return new ParseResult<VqaAnswer>(
            new VqaAnswer(word.group(1), ""),
            Collections.singletonList(
                new Rejection(cleaned, "no JSON; the plain one-word output was taken as the answer")),
            false,
            cleaned);
      }
      return noJson(text, cleaned, (VqaAnswer) null, "answer");
    }
    Map<?, ?> obj = (Map<?, ?>) payload;
    Object answer = key(obj, "answer");
    if (answer instanceof Boolean
        || !(answer instanceof String || JsonValues.isInt(answer) || JsonValues.isFloat(answer))) {
      return new ParseResult<VqaAnswer>(
          null, Collections.singletonList(new Rejection(payload, "answer is not a string")), false, cleaned);
    }
    String answerText = answer instanceof String ? PyStr.strip((String) answer) : PyRepr.str(answer);
    if (answerText.isEmpty()) {
      return new ParseResult<VqaAnswer>(
          null, Collections.singletonList(new Rejection(payload, "empty answer")), false, cleaned);
    }
    Object reason = key(obj, "reason");
    List<Rejection> rejected = new ArrayList<Rejection>();
    String reasonText;
    if (reason == NOTHING || reason == null) {
      reasonText = "";
    } else if (!(reason instanceof String)) {
      rejected.add(new Rejection(reason, "reason is not a string; dropped"));
      reasonText = "";
    } else {
      reasonText = (String) reason;
    }
    return new ParseResult<VqaAnswer>(
        new VqaAnswer(answerText, PyStr.strip(reasonText)), rejected, rejected.isEmpty(), cleaned);
  }
}
