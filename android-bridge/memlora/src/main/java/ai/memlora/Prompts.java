package ai.memlora;

import java.text.SimpleDateFormat;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.Collections;
import java.util.Date;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.TreeSet;

/**
 * The prompts of every memory stage, rendered as chat messages: a line-for-line mirror of {@code
 * memlora.runtime.prompts} (same templates from {@link PromptTemplates}, same JSON, same joins). The
 * golden tests compare every rendering with the Python one byte for byte.
 */
public final class Prompts {
  private Prompts() {}

  /** Roles accepted in conversation messages given to {@link #extractionMessages}. */
  public static final List<String> ROLES =
      Collections.unmodifiableList(Arrays.asList("system", "user", "assistant"));

  /** One retrieved memory for the generation prompt: its timestamp (or null) and its text. */
  public static final class TimedText {
    public final String timestamp;
    public final String text;

    public TimedText(String timestamp, String text) {
      this.timestamp = timestamp;
      this.text = text;
    }
  }

  /** The prompt set called {@code name}, or a {@link MemloraException} listing the known ones. */
  public static PromptTemplates getPromptSet(String name) {
    PromptTemplates ps = name == null ? null : PromptTemplates.all().get(name);
    if (ps == null) {
      StringBuilder known = new StringBuilder();
      for (String k : new TreeSet<String>(PromptTemplates.all().keySet())) {
        if (known.length() > 0) {
          known.append(", ");
        }
        known.append(k);
      }
      throw new MemloraException("unknown prompt set " + PyRepr.repr(name) + "; known: " + known);
    }
    return ps;
  }

  /** Mem0's {@code parse_messages}: one {@code "<role>: <content>\n"} line per message. */
  public static String formatConversation(List<? extends Map<String, ?>> messages) {
    StringBuilder out = new StringBuilder();
    for (int i = 0; i < messages.size(); i++) {
      Map<String, ?> message = messages.get(i);
      if (message == null) {
        throw new MemloraException("message " + i + " is not a mapping with 'role' and 'content': None");
      }
      Object role = message.get("role");
      Object content = message.get("content");
      if (!(role instanceof String) || !ROLES.contains(role)) {
        throw new MemloraException(
            "message " + i + " has role " + PyRepr.repr(role) + "; expected one of system, user, assistant");
      }
      if (!(content instanceof String)) {
        throw new MemloraException(
            "message " + i + " content must be a string, got " + PyRepr.typeName(content));
      }
      out.append((String) role).append(": ").append((String) content).append('\n');
    }
    return out.toString();
  }

  static String todayString(String today) {
    if (today == null) {
      return new SimpleDateFormat("yyyy-MM-dd", Locale.US).format(new Date());
    }
    String stripped = PyStr.strip(today);
    if (stripped.isEmpty()) {
      throw new MemloraException(
          "today must be a date or a non-empty 'YYYY-MM-DD' string, got " + PyRepr.repr(today));
    }
    return stripped;
  }

  /** Extraction stage input: system prompt + {@code "Input:\n" + formatConversation(messages)}. */
  public static List<ChatMessage> extractionMessages(
      List<? extends Map<String, ?>> messages, String promptSet, String today) {
    PromptTemplates ps = getPromptSet(promptSet);
    String conversation = formatConversation(messages);
    Map<String, String> fields = new LinkedHashMap<String, String>();
    if (ps.extractionSystem.contains("{today}")) {
      fields.put("today", todayString(today));
    }
    String system = PyStr.format(ps.extractionSystem, fields);
    List<ChatMessage> out = new ArrayList<ChatMessage>();
    out.add(new ChatMessage("system", system));
    out.add(new ChatMessage("user", "Input:\n" + conversation));
    return out;
  }

  static String oldMemoriesJson(List<? extends Map<String, ?>> oldMemories, List<String> keys) {
    List<Object> rows = new ArrayList<Object>();
    for (int i = 0; i < oldMemories.size(); i++) {
      Map<String, ?> memory = oldMemories.get(i);
      Object text = memory == null ? null : memory.get("text");
      Object id = memory == null ? null : memory.get("id");
      if (!(text instanceof String) || id == null) {
        throw new MemloraException(
            "old memory " + i + " must be {'id': str, 'text': str}, got " + PyRepr.repr(memory));
      }
      Map<String, Object> values = new LinkedHashMap<String, Object>();
      values.put("id", PyRepr.str(id));
      values.put("text", text);
      Map<String, Object> row = new LinkedHashMap<String, Object>();
      for (String key : keys) {
        row.put(key, values.get(key));
      }
      rows.add(row);
    }
    return PyJson.dumpsPrompt(rows);
  }

  static String factsJson(List<?> facts) {
    for (int i = 0; i < facts.size(); i++) {
      if (!(facts.get(i) instanceof String)) {
        throw new MemloraException(
            "fact " + i + " must be a string, got " + PyRepr.typeName(facts.get(i)));
      }
    }
    return PyJson.dumpsPrompt(new ArrayList<Object>(facts));
  }

  /** Update stage input: one user message, old memories and facts rendered as one-line JSON. */
  public static List<ChatMessage> updateMessages(
      List<? extends Map<String, ?>> oldMemories, List<?> facts, String promptSet) {
    PromptTemplates ps = getPromptSet(promptSet);
    Map<String, String> fields = new LinkedHashMap<String, String>();
    fields.put("retrieved_old_memory_dict", oldMemoriesJson(oldMemories, ps.oldMemoryKeys));
    fields.put("response_content", factsJson(facts));
    return Collections.singletonList(new ChatMessage("user", PyStr.format(ps.updateUser, fields)));
  }

  /** {@code "- [<timestamp>] <text>"} per memory ({@code "- <text>"} without one), or "(none)". */
  public static String formatMemories(List<TimedText> memories) {
    return formatMemories(memories, getPromptSet("memlora").timedMemoryLine);
  }

  /** {@code timedLine} filled per memory with a timestamp ({@code "- <text>"} without one), or "(none)". */
  public static String formatMemories(List<TimedText> memories, String timedLine) {
    StringBuilder out = new StringBuilder();
    for (int i = 0; i < memories.size(); i++) {
      TimedText item = memories.get(i);
      if (item == null) {
        throw new MemloraException("memory " + i + " must be a (timestamp, text) pair, got None");
      }
      if (item.text == null) {
        throw new MemloraException("memory " + i + " text must be a string, got NoneType");
      }
      if (i > 0) {
        out.append('\n');
      }
      if (item.timestamp != null && !item.timestamp.isEmpty()) {
        Map<String, String> fields = new LinkedHashMap<String, String>();
        fields.put("timestamp", item.timestamp);
        fields.put("text", item.text);
        out.append(PyStr.format(timedLine, fields));
      } else {
        out.append("- ").append(item.text);
      }
    }
    return memories.isEmpty() ? PromptTemplates.NO_MEMORIES : out.toString();
  }

  /** Generation stage input: optional system message + the filled generation template. */
  public static List<ChatMessage> generationMessages(
      String question, List<TimedText> memories, String promptSet) {
    if (question == null) {
      throw new MemloraException("question must be a string, got NoneType");
    }
    PromptTemplates ps = getPromptSet(promptSet);
    List<ChatMessage> out = new ArrayList<ChatMessage>();
    if (ps.generationSystem != null) {
      out.add(new ChatMessage("system", ps.generationSystem));
    }
    Map<String, String> fields = new LinkedHashMap<String, String>();
    fields.put("memories", formatMemories(memories, ps.timedMemoryLine));
    fields.put("question", question);
    out.add(new ChatMessage("user", PyStr.format(ps.generationUser, fields)));
    return out;
  }

  /** VQA stage input: one user message with the question (the image travels beside it). */
  public static List<ChatMessage> vqaMessages(String question, String promptSet) {
    if (question == null) {
      throw new MemloraException("question must be a string, got NoneType");
    }
    Map<String, String> fields = new LinkedHashMap<String, String>();
    fields.put("question", question);
    return Collections.singletonList(
        new ChatMessage("user", PyStr.format(getPromptSet(promptSet).vqaUser, fields)));
  }
}
