package ai.memlora;

import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

/** One chat message, {@code {"role": ..., "content": ...}}; the engine applies the chat template. */
public final class ChatMessage {
  public final String role;
  public final String content;

  public ChatMessage(String role, String content) {
    this.role = role;
    this.content = content;
  }

  /** {@code {"role": role, "content": content}} in that key order. */
  public Map<String, Object> toMap() {
    Map<String, Object> m = new LinkedHashMap<String, Object>();
    m.put("role", role);
    m.put("content", content);
    return m;
  }

  /** The messages as a JSON array (the form {@code Tokenizer.applyChatTemplate} takes). */
  public static String toJson(List<ChatMessage> messages) {
    List<Object> rows = new ArrayList<Object>();
    for (ChatMessage m : messages) {
      rows.add(m.toMap());
    }
    return PyJson.dumps(rows, ", ", ": ", false);
  }

  @Override
  public boolean equals(Object o) {
    if (!(o instanceof ChatMessage)) {
      return false;
    }
    ChatMessage other = (ChatMessage) o;
    return role.equals(other.role) && content.equals(other.content);
  }

  @Override
  public int hashCode() {
    return role.hashCode() * 31 + content.hashCode();
  }

  @Override
  public String toString() {
    return role + ": " + content;
  }
}
