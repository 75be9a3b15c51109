package ai.memlora;

import java.util.ArrayList;
import java.util.List;

/**
 * The text {@link JsonRepair} reads and json_repair's {@code parse_string} (json-repair 0.64), rule for rule: the
 * cursor and its context stack, literals, bare words, and quoted strings with the look-ahead that decides whether a
 * quote ends the string. A quote that is not followed by what the context expects (":" after a key, "," or "}" after
 * an object value, "," or "]" in an array) belongs to the string when the look-ahead says it goes on
 * ({@code "Loves "Brave" by Sara"}). A German low quote ({@code \u201e}) opens a span inside the string that a
 * straight quote or {@code \u201d} closes without ending the string. A {@code ```json} block right after a
 * string's opening quote is read as the value (json_repair's LLM-block rule).
 */
abstract class JsonRepairStrings {
  static final String QUOTES = "\"'\u201c\u201d";
  /** The German low quote that opens a span inside a string (json_repair's low smart quote). */
  static final char LOW_QUOTE = '\u201e';

  enum Ctx {
    ARRAY,
    OBJECT_KEY,
    OBJECT_VALUE
  }

  String s; // json_repair splits an object on a repeated key by inserting a "{"
  int i;
  final List<Ctx> ctx = new ArrayList<Ctx>();

  JsonRepairStrings(String s) {
    this.s = s;
  }

  Character at(int offset) {
    int k = i + offset;
    return k >= 0 && k < s.length() ? s.charAt(k) : null;
  }

  Character at() {
    return at(0);
  }

  void skipWhitespace() {
    while (i < s.length() && PyStr.isSpace(s.charAt(i))) {
      i++;
    }
  }

  void skipWhitespaceAndComments() {
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

  void skipComment() {
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

  /** parse_string: a quoted string, a literal, or a bare word (missing quotes), after any junk before it. */
  Object parseString() {
    Character c = at();
    if (c != null && (c == '#' || c == '/')) {
      skipComment();
      return "";
    }
    while (at() != null && QUOTES.indexOf(at()) < 0 && !Character.isLetterOrDigit(at())) {
      i++;
    }
    c = at();
    if (c == null) {
      return "";
    }
    if (QUOTES.indexOf(c) >= 0) {
      return quotedString(c);
    }
    if (current() != Ctx.OBJECT_KEY && "tfnTFN".indexOf(c) >= 0) {
      Object literal = literal();
      if (literal != NOT_LITERAL) {
        return literal;
      }
    }
    StringState st = new StringState();
    st.missingQuotes = true;
    return finish(st, scanString(st));
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


  // ------------------------------------------------------------------------------------ quoted strings

  /** Whether {@code c} is one of {@code chars}; null (the end of the text) is one when {@code orEnd}. */
  static boolean among(Character c, String chars, boolean orEnd) {
    return c == null ? orEnd : chars.indexOf(c) >= 0;
  }

  Ctx current() {
    return ctx.isEmpty() ? null : ctx.get(ctx.size() - 1);
  }

  /** skip_to_character: the offset from {@code i} of the first unescaped target at or after {@code idx}. */
  int skipTo(String targets, int idx) {
    int k = i + idx;
    int backslashes = 0;
    while (k < s.length()) {
      char c = s.charAt(k);
      if (c == '\\') {
        backslashes++;
        k++;
        continue;
      }
      if (targets.indexOf(c) >= 0 && backslashes % 2 == 0) {
        return k - i;
      }
      backslashes = 0;
      k++;
    }
    return s.length() - i;
  }

  /** scroll_whitespaces: the offset of the first non-whitespace character at or after {@code idx}. */
  int scrollWs(int idx) {
    while (i + idx >= 0 && i + idx < s.length() && PyStr.isSpace(s.charAt(i + idx))) {
      idx++;
    }
    return idx;
  }

  private boolean onlyWhitespaceUntil(int end) {
    for (int j = 1; j < end; j++) {
      Character c = at(j);
      if (c != null && !PyStr.isSpace(c)) {
        return false;
      }
    }
    return true;
  }

  /** What a quoted string's scan carries from character to character (json_repair's StringParseState). */
  private static final class StringState {
    char left = '"';
    char right = '"';
    boolean missingQuotes;
    boolean doubledQuotes;
    boolean unmatchedDelimiter;
    boolean pendingInlineContainer;
    final List<Character> inlineContainers = new ArrayList<Character>();
    boolean noFutureDelimiter;
    int unmatchedOpeningBraces;
    int regexClassStart = -1;
    /** Open low-quote spans: a {@code \u201e} opens one, a straight or a curly closing quote closes it (json_repair
     * pushes a sentinel onto its right-delimiter stack); while one is open the string's own quote does not end it. */
    int lowQuoteSpans;
    final StringBuilder acc = new StringBuilder();

    boolean inLowQuoteSpan() {
      return lowQuoteSpans > 0;
    }

    /** _active_rstring_delimiter: the string's closing quote, or none while a low-quote span is open. */
    char activeRight() {
      return inLowQuoteSpan() ? '\0' : right;
    }

    char last() {
      return acc.length() == 0 ? '\0' : acc.charAt(acc.length() - 1);
    }

    void append(CharSequence content) {
      acc.append(content);
      for (int k = 0; k < content.length(); k++) {
        char c = content.charAt(k);
        if (c == '{') {
          unmatchedOpeningBraces++;
        } else if (c == '}' && unmatchedOpeningBraces > 0) {
          unmatchedOpeningBraces--;
        } else if (c == '[') {
          regexClassStart = acc.length() - content.length() + k + 1;
        } else if (c == ']') {
          regexClassStart = -1;
        }
      }
    }

    void replaceTrailingBackslash(CharSequence content) {
      acc.setLength(acc.length() - 1);
      append(content);
    }
  }

  /** What {@code stringEntry} returns when the scan goes on (any other value is the string itself). */
  private static final String SCAN = new String("scan");

  /** parse_json: the next value at {@code i} (the structure is {@link JsonRepair}'s). */
  abstract Object parseValue();

  /**
   * parse_json_llm_block: a {@code ```json} block right after a string's opening quote, closed by another fence, is
   * read as the value itself; {@link #SCAN} when there is none.
   */
  private Object fencedJson() {
    if (!s.startsWith("```json", i)) {
      return SCAN;
    }
    int k = skipTo("`", 7);
    if (!s.startsWith("```", i + k)) {
      return SCAN;
    }
    i += 7;
    return parseValue();
  }

  /** parse_string for the quoted string at {@code i} (opening quote {@code open}); {@code i} ends after it. */
  private Object quotedString(char open) {
    String fast = simpleQuoted();
    if (fast != null) {
      return fast;
    }
    StringState st = new StringState();
    if (open == '\'') {
      st.left = st.right = '\'';
    } else if (open == '\u201c') {
      st.left = '\u201c';
      st.right = '\u201d';
    }
    i++;
    if (at() != null && at() == '`') {
      Object block = fencedJson();
      if (block != SCAN) {
        return block;
      }
    }
    String entry = stringEntry(st);
    if (entry != SCAN) {
      return entry;
    }
    return finish(st, scanString(st));
  }

  /** _finalize_string_result: the closing quote consumed, or the text right-stripped when there was none. */
  private String finish(StringState st, Character c) {
    if (c != null && st.missingQuotes && current() == Ctx.OBJECT_KEY && PyStr.isSpace(c)) {
      skipWhitespace();
      if (!among(at(), ":,", false)) {
        return ""; // a bare word and more text where a key should be: not a key
      }
    }
    String value = st.acc.toString();
    if (c == null || c != st.right) {
      value = rstrip(value);
    } else {
      i++;
    }
    if (st.missingQuotes || (!value.isEmpty() && value.charAt(value.length() - 1) == '\n')) {
      value = rstrip(value);
    }
    return value;
  }

  /** _try_parse_simple_quoted_string: "..." with no escape or line break, followed by what the context expects. */
  private String simpleQuoted() {
    if (at() == null || at() != '"') {
      return null;
    }
    int end = s.indexOf('"', i + 1);
    if (end < 0) {
      return null;
    }
    String value = s.substring(i + 1, end);
    if (value.indexOf('\\') >= 0 || value.indexOf('\n') >= 0 || value.indexOf('\r') >= 0) {
      return null;
    }
    int k = end + 1;
    while (k < s.length() && PyStr.isSpace(s.charAt(k))) {
      k++;
    }
    Character next = k < s.length() ? s.charAt(k) : null;
    Ctx cur = current();
    boolean fits;
    if (cur == Ctx.OBJECT_KEY) {
      fits = next != null && next == ':';
    } else if (cur == Ctx.OBJECT_VALUE) {
      fits = among(next, ",}", true);
    } else if (cur == Ctx.ARRAY) {
      fits = among(next, ",]", true);
    } else {
      fits = next == null;
    }
    if (!fits) {
      return null;
    }
    i = end + 1;
    return value;
  }

  /** The string's opening after its quote (_prepare_string_entry): empty and doubled quotes. */
  private String stringEntry(StringState st) {
    Character c = at();
    if (c == null || c != st.left) {
      return SCAN;
    }
    Ctx cur = current();
    Character next = at(1);
    if ((cur == Ctx.OBJECT_KEY && next != null && next == ':')
        || (cur == Ctx.OBJECT_VALUE && among(next, ",}", false))
        || (cur == Ctx.ARRAY && among(next, ",]", false))) {
      i++;
      return "";
    }
    if (next != null && next == st.left) {
      return ""; // a doubled quote and then a quote again
    }
    String right = String.valueOf(st.right);
    int k = skipTo(right, 1);
    if (at(k + 1) != null && at(k + 1) == st.right) {
      st.doubledQuotes = true;
      i++;
      return SCAN;
    }
    if (at(k) != null && at(k) == st.right) {
      int outer = skipTo(right, k + 1);
      Character after = at(scrollWs(outer + 1));
      if (cur == Ctx.OBJECT_VALUE && !onlyWhitespaceUntil(k) && at(outer) != null && at(outer) == st.right
          && among(after, ",}", true)) {
        st.append(String.valueOf(st.left)); // a leading quote that starts a quoted span
        st.unmatchedDelimiter = true;
        i++;
        return SCAN;
      }
    }
    Character nextC = at(scrollWs(1));
    if (nextC != null && (QUOTES.indexOf(nextC) >= 0 || nextC == '{' || nextC == '[')) {
      i++;
      return "";
    }
    if (!among(nextC, ",]}", false)) {
      i++; // a doubled quote that was a mistake: one is dropped
    }
    return SCAN;
  }

  /** _scan_string_body: the characters up to the closing quote; returns the character it stopped at. */
  private Character scanString(StringState st) {
    Character c = at();
    while (c != null && (c != st.right || st.inLowQuoteSpan())) {
      Ctx cur = current();
      if (st.missingQuotes) {
        if ((cur == Ctx.OBJECT_KEY && (c == ':' || PyStr.isSpace(c))) || (cur == Ctx.ARRAY && (c == ']' || c == ','))) {
          break;
        }
      }
      if (c == LOW_QUOTE && st.last() != '\\') {
        st.lowQuoteSpans++;
        c = appendLiteral(st, c);
        continue;
      }
      if (st.inLowQuoteSpan() && c == '\u201d') {
        st.lowQuoteSpans--;
        c = appendLiteral(st, c);
        continue;
      }
      if ((st.pendingInlineContainer
              || (cur == Ctx.OBJECT_VALUE && c == '{' && !(at(-1) != null && at(-1) == '\\')
                  && bareKeyFollowedByColon(scrollWs(1))))
          && "{[(".indexOf(c) >= 0
          && st.last() != '\\') {
        int end = skipInlineContainer(0);
        if (end >= 0) {
          st.pendingInlineContainer = false;
          st.inlineContainers.clear();
          st.append(s.substring(i, i + end));
          i += end;
          c = at();
          continue;
        }
      }
      if (cur == Ctx.OBJECT_VALUE && c == ',' && !st.pendingInlineContainer && st.inlineContainers.isEmpty()) {
        String kind = st.noFutureDelimiter ? "string" : classifyObjectValueComma();
        if (kind.equals("member")) {
          break; // the comma starts the next member: the closing quote is missing
        }
        if (kind.equals("string_no_future_delimiter")) {
          st.noFutureDelimiter = true;
        }
        st.pendingInlineContainer = kind.equals("container");
        c = appendLiteral(st, c);
        continue;
      }
      if (updateInlineContainers(st, c)) {
        c = appendLiteral(st, c);
        continue;
      }
      if (cur == Ctx.OBJECT_VALUE && c == '}' && st.last() != st.right) {
        if (st.unmatchedOpeningBraces > 0) {
          c = appendLiteral(st, c);
          continue;
        }
        if (closingQuoteMissing(st)) {
          break;
        }
      }
      if (c == ']' && ctx.contains(Ctx.ARRAY) && st.last() != st.right && at(skipTo(String.valueOf(st.right), 0)) == null) {
        break;
      }
      if (cur == Ctx.OBJECT_VALUE && c == '}') {
        int k = scrollWs(1);
        Character next = at(k);
        if (next == null || (next == '`' && at(k + 1) != null && at(k + 1) == '`' && at(k + 2) != null && at(k + 2) == '`')) {
          break; // the } closes the object
        }
      }
      st.append(String.valueOf(c));
      i++;
      c = at();
      if (c == null) {
        break;
      }
      if (st.last() == '\\') {
        Character[] next = {c};
        if (normalizeEscape(st, next)) {
          c = next[0];
          continue;
        }
      }
      if (c == ':' && !st.missingQuotes && cur == Ctx.OBJECT_KEY && keyEndsBeforeColon(st)) {
        break;
      }
      if (st.inLowQuoteSpan() && c == '"') {
        st.lowQuoteSpans--;
        c = appendLiteral(st, c);
        continue;
      }
      if (c == st.right && cur == Ctx.OBJECT_VALUE && inRegexClass(st)) {
        c = appendLiteral(st, c); // a quote inside a "[...]" with no space in it (a regex character class)
        continue;
      }
      if (c == st.right && st.last() != '\\') {
        int verdict = rightDelimiterCandidate(st);
        if (verdict == BREAK) {
          break;
        }
        if (verdict == BREAK_BEFORE) {
          c = at();
          break;
        }
        if (verdict == HANDLED) {
          c = at();
          continue;
        }
      }
    }
    return c;
  }

  /** _quote_belongs_to_regex_character_class: an open "[" with no whitespace since, and a "]" ahead. */
  private boolean inRegexClass(StringState st) {
    if (st.regexClassStart < 0) {
      return false;
    }
    for (int k = st.regexClassStart; k < st.acc.length(); k++) {
      if (PyStr.isSpace(st.acc.charAt(k))) {
        return false;
      }
    }
    Character close = at(skipTo("]", 1));
    return close != null && close == ']';
  }

  private Character appendLiteral(StringState st, char c) {
    st.append(String.valueOf(c));
    i++;
    return at();
  }

  /** update_inline_container_stack: true when {@code c} closes a bracket opened inside the string. */
  private static boolean updateInlineContainers(StringState st, char c) {
    if (c == '{' || c == '[') {
      if (st.pendingInlineContainer) {
        st.inlineContainers.add(c);
        st.pendingInlineContainer = false;
        return false;
      }
      if (!st.inlineContainers.isEmpty()) {
        st.inlineContainers.add(c);
      }
    }
    if (!st.inlineContainers.isEmpty()) {
      char top = st.inlineContainers.get(st.inlineContainers.size() - 1);
      if ((c == '}' && top == '{') || (c == ']' && top == '[')) {
        st.inlineContainers.remove(st.inlineContainers.size() - 1);
        return true;
      }
    }
    return false;
  }

  /** At a "}" in an object value: true when no closing quote for this string can be found (stop here). */
  private boolean closingQuoteMissing(StringState st) {
    boolean missing = !(at(1) != null && at(1) == '\\');
    int k = skipTo(String.valueOf(st.right), 1);
    if (at(k) != null) {
      k = scrollWs(k + 1);
      Character next = at(k);
      if (next == null || next == ',' || next == '}') {
        return false;
      }
      k = skipTo(String.valueOf(st.left), k);
      if (at(k) == null) {
        return false;
      }
      next = at(scrollWs(k + 1));
      return missing && (next == null || next == ':');
    }
    if (at(skipTo(":", 1)) != null) {
      return true;
    }
    k = scrollWs(1);
    return missing && skipTo("}", k) - k <= 1;
  }

  /** At a ":" inside a key: true when the key's closing quote is missing and the ":" ends it. */
  private boolean keyEndsBeforeColon(StringState st) {
    int k = skipTo(String.valueOf(st.left), 1);
    if (at(k) == null) {
      return true;
    }
    k = skipTo(String.valueOf(st.right), k + 1);
    if (at(k) == null) {
      return false;
    }
    return among(at(scrollWs(k + 1)), ",}", false);
  }

  /** _normalize_escape_sequence for the character after a backslash ({@code c[0]}, updated); false: not an escape. */
  private boolean normalizeEscape(StringState st, Character[] c) {
    char e = c[0];
    char active = st.activeRight();
    if (st.inLowQuoteSpan() && e == '"') {
      st.replaceTrailingBackslash("\"");
      st.lowQuoteSpans--;
      i++;
      c[0] = at();
      return true;
    }
    if (e == '\\') {
      int runStart = i - 1;
      int runEnd = i + 1;
      while (runEnd < s.length() && s.charAt(runEnd) == '\\') {
        runEnd++;
      }
      int run = runEnd - runStart;
      Character next = at(runEnd - i);
      Character afterQuote = at(scrollWs(runEnd - i + 1));
      if (run % 2 == 0 && (next == null || next != active || among(afterQuote, ",:}]", true))) {
        StringBuilder half = new StringBuilder();
        for (int k = 0; k < run / 2; k++) {
          half.append('\\');
        }
        st.replaceTrailingBackslash(half);
        i = runEnd;
        c[0] = at();
        return true;
      }
    }
    if (e == active || "tnrb\\".indexOf(e) >= 0) {
      String mapped = e == 't' ? "\t" : e == 'n' ? "\n" : e == 'r' ? "\r" : e == 'b' ? "\b" : String.valueOf(e);
      st.replaceTrailingBackslash(mapped);
      i++;
      Character next = at();
      while (next != null && st.last() == '\\' && (next == active || next == '\\')) {
        st.replaceTrailingBackslash(String.valueOf(next));
        i++;
        next = at();
      }
      c[0] = next;
      return true;
    }
    if (e == 'u' || e == 'x') {
      int n = e == 'u' ? 4 : 2;
      if (i + 1 + n <= s.length()) {
        String hex = s.substring(i + 1, i + 1 + n);
        if (hex.matches("[0-9a-fA-F]+")) {
          st.replaceTrailingBackslash(String.valueOf((char) Integer.parseInt(hex, 16)));
          i += 1 + n;
          c[0] = at();
          return true;
        }
      }
      return false;
    }
    if (e == LOW_QUOTE || (QUOTES.indexOf(e) >= 0 && e != active)) {
      st.replaceTrailingBackslash(String.valueOf(e)); // an escaped quote that needs no escape
      i++;
      c[0] = at();
      return true;
    }
    return false;
  }

  private static final int GO_ON = 0;
  private static final int HANDLED = 1;
  private static final int BREAK = 2;
  private static final int BREAK_BEFORE = 3;

  /** _handle_right_delimiter_candidate: at a quote, does the string end here (BREAK / GO_ON) or go on (HANDLED)? */
  private int rightDelimiterCandidate(StringState st) {
    char quote = st.right;
    if (st.doubledQuotes && at(1) != null && at(1) == quote) {
      i++; // a doubled quote: the string ends at the second one
      return GO_ON;
    }
    Ctx cur = current();
    if (st.missingQuotes && cur == Ctx.OBJECT_VALUE) {
      int k = 1;
      while (at(k) != null && at(k) != quote && at(k) != st.left) {
        k++;
      }
      if (at(k) != null) {
        Character after = at(scrollWs(k + 1));
        if (after != null && after == ':') {
          i--; // the quote opens the next key: the bare value ends before it
          return BREAK_BEFORE;
        }
      }
      return GO_ON;
    }
    if (st.unmatchedDelimiter) {
      st.unmatchedDelimiter = false;
      appendLiteral(st, quote);
      return HANDLED;
    }
    int k = 1;
    Character next = at(k);
    boolean checkComma = true;
    while (next != null && next != quote && next != st.left) {
      if (checkComma && Character.isLetter(next)) {
        checkComma = false;
      }
      if ((ctx.contains(Ctx.OBJECT_KEY) && (next == ':' || next == '}'))
          || (ctx.contains(Ctx.OBJECT_VALUE) && next == '}')
          || (ctx.contains(Ctx.ARRAY) && (next == ']' || next == ','))
          || (checkComma && cur == Ctx.OBJECT_VALUE && next == ',')) {
        break;
      }
      k++;
      next = at(k);
    }
    if (next != null && next == ',' && cur == Ctx.OBJECT_VALUE) {
      k = skipTo(String.valueOf(quote), k + 1);
      k = scrollWs(k + 1);
      if (among(at(k), "},", false)) {
        appendLiteral(st, quote); // a quote before ", next member": part of the string
        return HANDLED;
      }
    } else if (next != null && next == quote && !(at(k - 1) != null && at(k - 1) == '\\')) {
      if (onlyWhitespaceUntil(k) && !(cur == Ctx.OBJECT_VALUE && quotedMemberFollows(k))) {
        return BREAK;
      }
      if (cur == Ctx.OBJECT_VALUE) {
        if (quotedMemberFollows(k)) {
          appendLiteral(st, quote);
          return HANDLED;
        }
        k = skipTo(String.valueOf(quote), k + 1) + 1;
        next = at(k);
        while (next != null && next != ':') {
          if (",]}".indexOf(next) >= 0 || (next == quote && !(at(k - 1) != null && at(k - 1) == '\\'))) {
            break;
          }
          k++;
          next = at(k);
        }
        if (next == null || next != ':') {
          st.unmatchedDelimiter = !st.unmatchedDelimiter;
          appendLiteral(st, quote);
          return HANDLED;
        }
      } else if (cur == Ctx.ARRAY) {
        if (arrayQuotesPairUp(quote, k)) {
          st.unmatchedDelimiter = !st.unmatchedDelimiter;
          appendLiteral(st, quote);
          return HANDLED;
        }
        return BREAK;
      } else if (cur == Ctx.OBJECT_KEY) {
        appendLiteral(st, quote);
        return HANDLED;
      }
    }
    return GO_ON;
  }

  /** _array_quotes_pair_up: an odd number of quotes after offset {@code k} up to the next "]". */
  private boolean arrayQuotesPairUp(char quote, int k) {
    String targets = quote + "]";
    int following = 0;
    while (true) {
      k = skipTo(targets, k + 1);
      Character c = at(k);
      if (c == null || c != quote) {
        break;
      }
      following++;
    }
    return following % 2 == 1;
  }

  /** _quoted_object_member_follows: after the quote at offset {@code k}, ", key:" comes. */
  private boolean quotedMemberFollows(int k) {
    int comma = scrollWs(k + 1);
    if (at(comma) == null || at(comma) != ',') {
      return false;
    }
    return memberStartsAt(commentPrefixedMemberStart(comma + 1));
  }

  /** _object_member_starts_at: a quoted key followed by ":", or a bare key followed by ":". */
  private boolean memberStartsAt(int k) {
    Character c = at(k);
    if (c == null || c == '}') {
      return false;
    }
    if (QUOTES.indexOf(c) >= 0) {
      char end = c == '\u201c' ? '\u201d' : c;
      int keyEnd = skipTo(String.valueOf(end), k + 1);
      if (at(keyEnd) == null || at(keyEnd) != end) {
        return false;
      }
      Character after = at(scrollWs(keyEnd + 1));
      return after != null && after == ':';
    }
    if (Character.isLetterOrDigit(c) || c == '_') {
      return bareKeyFollowedByColon(k);
    }
    return false;
  }

  /** _bare_key_is_followed_by_colon. */
  private boolean bareKeyFollowedByColon(int k) {
    Character c = at(k);
    if (c == null || !(Character.isLetterOrDigit(c) || c == '_')) {
      return false;
    }
    Character after = at(afterBareKey(k));
    return after != null && after == ':';
  }

  /** The offset of the first non-whitespace character after the bare key (letters, digits, _ and -) at {@code k}. */
  private int afterBareKey(int k) {
    while (at(k) != null && (Character.isLetterOrDigit(at(k)) || at(k) == '_' || at(k) == '-')) {
      k++;
    }
    return scrollWs(k);
  }

  /** _scroll_comment_prefixed_member_start: skips whitespace and comments from offset {@code k}. */
  private int commentPrefixedMemberStart(int k) {
    k = scrollWs(k);
    while (true) {
      Character c = at(k);
      if (c != null && (c == '#' || (c == '/' && at(k + 1) != null && at(k + 1) == '/'))) {
        while (at(k) != null && at(k) != '\n' && at(k) != '\r') {
          k++;
        }
        k = scrollWs(k);
        continue;
      }
      if (c != null && c == '/' && at(k + 1) != null && at(k + 1) == '*') {
        k += 2;
        while (at(k) != null && !(at(k) == '*' && at(k + 1) != null && at(k + 1) == '/')) {
          k++;
        }
        if (at(k) == null) {
          return k;
        }
        k = scrollWs(k + 2);
        continue;
      }
      return k;
    }
  }

  /** classify_object_value_comma: does a "," inside an object value start the next member? */
  private String classifyObjectValueComma() {
    int k = scrollWs(1);
    Character c = at(k);
    if (c == null || c == '}') {
      return "member";
    }
    if (QUOTES.indexOf(c) >= 0) {
      int keyEnd = skipTo(String.valueOf(c), k + 1);
      if (at(keyEnd) == null) {
        return "string";
      }
      Character after = at(scrollWs(keyEnd + 1));
      return after != null && after == ':' ? "member" : "string";
    }
    if (c == '`' || Character.isLetterOrDigit(c) || c == '_') {
      int keyEnd = afterBareKey(c == '`' ? k + 1 : k);
      boolean colon = at(keyEnd) != null && at(keyEnd) == ':';
      if (c == '`') {
        return colon ? "member" : "string";
      }
      if (colon && bareMemberHasValue(keyEnd + 1)) {
        return "member";
      }
    }
    if (c == '{' || c == '[') {
      return "container";
    }
    String specials = QUOTES + "{[";
    int special = skipTo(specials, k);
    Character sc = at(special);
    if (sc == null) {
      return "string_no_future_delimiter";
    }
    if (sc == '{' || sc == '[') {
      return "string";
    }
    int keyEnd = skipTo(String.valueOf(sc), special + 1);
    if (at(keyEnd) == null) {
      return "string";
    }
    Character after = at(scrollWs(keyEnd + 1));
    return after != null && after == ':' ? "member" : "string";
  }

  /** _bare_member_has_recoverable_value: the value after a bare key's ":" at offset {@code k}. */
  private boolean bareMemberHasValue(int k) {
    int start = scrollWs(k);
    Character c = at(start);
    if (c != null && (QUOTES.indexOf(c) >= 0 || c == '{' || c == '[' || c == '-' || Character.isDigit(c))) {
      return true;
    }
    for (String literal : new String[] {"true", "false", "null"}) {
      if (s.startsWith(literal, i + start)) {
        Character end = at(start + literal.length());
        if (end == null || PyStr.isSpace(end) || ",}]".indexOf(end) >= 0) {
          return true;
        }
      }
    }
    Character end = at(skipTo(QUOTES + "}", start));
    return end != null && end == '}';
  }

  /** _skip_inline_container: the offset after the bracket group opened at offset {@code k}, or -1 if unclosed. */
  private int skipInlineContainer(int k) {
    Character open = at(k);
    String closers = "]})";
    String openers = "[{(";
    if (open == null || openers.indexOf(open) < 0) {
      return k;
    }
    List<Character> stack = new ArrayList<Character>();
    stack.add(closers.charAt(openers.indexOf(open)));
    int j = k + 1;
    while (!stack.isEmpty()) {
      Character c = at(j);
      if (c == null) {
        return -1;
      }
      if (QUOTES.indexOf(c) >= 0) {
        char end = c == '\u201c' ? '\u201d' : c;
        j = skipTo(String.valueOf(end), j + 1);
        if (at(j) == null || at(j) != end) {
          return -1;
        }
      } else if (openers.indexOf(c) >= 0 && startsNestedInlineContainer(j)) {
        stack.add(closers.charAt(openers.indexOf(c)));
      } else if (c == stack.get(stack.size() - 1)) {
        stack.remove(stack.size() - 1);
        if (stack.isEmpty()) {
          return j + 1;
        }
      }
      j++;
    }
    return -1;
  }

  /** _starts_nested_inline_container. */
  private boolean startsNestedInlineContainer(int k) {
    char open = at(k);
    for (int p = k - 1; p >= 0; p--) {
      Character prev = at(p);
      if (prev == null) {
        return true;
      }
      if (PyStr.isSpace(prev)) {
        continue;
      }
      if ("[{(".indexOf(prev) >= 0) {
        return true;
      }
      if (prev != ',' && prev != ':') {
        return false;
      }
      int nextIdx = scrollWs(k + 1);
      Character next = at(nextIdx);
      if (open == '[' || open == '(') {
        return next != null && ("])-{[(tfn".indexOf(next) >= 0 || QUOTES.indexOf(next) >= 0
            || Character.isDigit(next));
      }
      if (open != '{') {
        return false;
      }
      if (next != null && (next == '}' || QUOTES.indexOf(next) >= 0)) {
        return true;
      }
      return prev == ':' && bareKeyFollowedByColon(nextIdx);
    }
    return true;
  }

  private static String rstrip(String v) {
    int end = v.length();
    while (end > 0 && PyStr.isSpace(v.charAt(end - 1))) {
      end--;
    }
    return v.substring(0, end);
  }
}
