package ai.memlora;

import java.util.ArrayList;
import java.util.HashSet;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Set;

/**
 * Small prompt ids ("0", "1", ...) to real memory ids, in the order the memories are shown to the
 * model; keeps each memory's text. Mirrors {@code memlora.runtime.update.IdMap}.
 */
public final class IdMap {
  private final List<String> real = new ArrayList<String>();
  private final List<String> texts = new ArrayList<String>();

  /** Numbers the (id, text) pairs in order; a real id seen twice keeps its first number. */
  public IdMap(List<String[]> idAndText) {
    Set<String> seen = new HashSet<String>();
    for (String[] pair : idAndText) {
      if (seen.add(pair[0])) {
        real.add(pair[0]);
        texts.add(pair[1]);
      }
    }
  }

  /** {@code IdMap.from_memories(records)}. */
  public static IdMap fromMemories(List<MemoryRecord> records) {
    List<String[]> pairs = new ArrayList<String[]>();
    for (MemoryRecord r : records) {
      pairs.add(new String[] {r.id, r.text});
    }
    return new IdMap(pairs);
  }

  public int size() {
    return real.size();
  }

  private int index(String promptId) {
    if (promptId != null && isAsciiCanonicalInt(promptId)) {
      int k;
      try {
        k = Integer.parseInt(promptId);
      } catch (NumberFormatException e) {
        return -1;
      }
      if (k < real.size()) {
        return k;
      }
    }
    return -1;
  }

  /** {@code s.isdigit() and s == str(int(s))}: only canonical decimal integers name a prompt id. */
  private static boolean isAsciiCanonicalInt(String s) {
    if (s.isEmpty()) {
      return false;
    }
    for (int k = 0; k < s.length(); k++) {
      char c = s.charAt(k);
      if (c < '0' || c > '9') {
        return false;
      }
    }
    return s.equals("0") || s.charAt(0) != '0';
  }

  public boolean contains(String promptId) {
    return index(promptId) >= 0;
  }

  /** The real id of {@code promptId}; throws {@link MemloraException} when it was not shown. */
  public String get(String promptId) {
    int k = index(promptId);
    if (k < 0) {
      throw new MemloraException("unknown prompt id " + PyRepr.repr(promptId));
    }
    return real.get(k);
  }

  /** The text shown for {@code promptId}. */
  public String text(String promptId) {
    int k = index(promptId);
    if (k < 0) {
      throw new MemloraException("unknown prompt id " + PyRepr.repr(promptId));
    }
    return texts.get(k);
  }

  /** {@code {"0": real_id, ...}} in order. */
  public Map<String, String> asMap() {
    Map<String, String> out = new LinkedHashMap<String, String>();
    for (int k = 0; k < real.size(); k++) {
      out.put(String.valueOf(k), real.get(k));
    }
    return out;
  }

  /** What the update prompt shows: {@code [{"id": "0", "text": ...}, ...]}. */
  public List<Map<String, Object>> promptMemories() {
    List<Map<String, Object>> out = new ArrayList<Map<String, Object>>();
    for (int k = 0; k < texts.size(); k++) {
      Map<String, Object> row = new LinkedHashMap<String, Object>();
      row.put("id", String.valueOf(k));
      row.put("text", texts.get(k));
      out.add(row);
    }
    return out;
  }

  /** Python's {@code str.isdigit} for the characters a model may emit (Nd digits, superscripts, circled digits). */
  static boolean pyIsDigit(String s) {
    if (s.isEmpty()) {
      return false;
    }
    for (int k = 0; k < s.length(); ) {
      int cp = s.codePointAt(k);
      int type = Character.getType(cp);
      boolean digit =
          type == Character.DECIMAL_DIGIT_NUMBER
              || (type == Character.OTHER_NUMBER
                  && Character.getNumericValue(cp) >= 0
                  && Character.getNumericValue(cp) <= 9);
      if (!digit) {
        return false;
      }
      k += Character.charCount(cp);
    }
    return true;
  }

  /** Reason text for an id that is not in the map. */
  public String whyUnknown(String promptId) {
    if (real.isEmpty()) {
      return "id " + PyRepr.repr(promptId) + " unknown: no memories were shown";
    }
    if (pyIsDigit(promptId)) {
      return "id " + promptId + " out of range (shown ids: 0-" + (real.size() - 1) + ")";
    }
    return "id " + PyRepr.repr(promptId) + " unknown (shown ids: 0-" + (real.size() - 1) + ")";
  }
}
