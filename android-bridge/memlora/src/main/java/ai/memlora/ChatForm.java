package ai.memlora;

import java.util.ArrayList;
import java.util.Collections;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

/**
 * The bundle's chat template as plain strings ({@code bundle.json} {@code "chat"}; Python's
 * {@code memlora.runtime.chat_form.ChatForm}): renders a prompt to the same bytes as the model's Jinja
 * template, which the export checked on its check conversations. No template string ever goes to
 * ONNX Runtime GenAI's {@code Tokenizer.applyChatTemplate}: a bundle without a form is refused here.
 *
 * <pre>
 * text = (noSystemPrefix unless messages[0] is a system message)
 *      + concat(roles[m.role].before + content(m) + roles[m.role].after)
 *      + (generationPrompt if addGenerationPrompt)
 * content(m) = trim ? strip(m.content) : m.content
 * </pre>
 *
 * With {@code system_role} "folded" the system message is first removed and the first user message's
 * content becomes {@code system + "\n\n" + user}.
 */
public final class ChatForm {
  /** What the template writes around one message's content. */
  public static final class RoleForm {
    public final String before;
    public final String after;

    RoleForm(String before, String after) {
      this.before = before;
      this.after = after;
    }
  }

  public static final String NATIVE = "native";
  public static final String FOLDED = "folded";
  /** Between the system content and the first user message's content when the system message is folded. */
  public static final String FOLD_SEPARATOR = "\n\n";

  public final Map<String, RoleForm> roles;
  public final String noSystemPrefix;
  public final String generationPrompt;
  public final String systemRole;
  public final boolean trim;

  ChatForm(Map<String, RoleForm> roles, String noSystemPrefix, String generationPrompt, String systemRole, boolean trim) {
    this.roles = Collections.unmodifiableMap(roles);
    this.noSystemPrefix = noSystemPrefix;
    this.generationPrompt = generationPrompt;
    this.systemRole = systemRole;
    this.trim = trim;
  }

  /** The form of a manifest's {@code "chat"} object; {@link BundleException} when it is missing or malformed. */
  public static ChatForm fromChatJson(Object chat, String where) {
    Object form = chat instanceof Map ? ((Map<?, ?>) chat).get("form") : null;
    if (!(form instanceof Map)) {
      throw new BundleException(where + ": no chat form ('chat': {'form': ...}); re-export the bundle with this memlora");
    }
    Object role = ((Map<?, ?>) chat).containsKey("system_role") ? ((Map<?, ?>) chat).get("system_role") : NATIVE;
    if (!NATIVE.equals(role) && !FOLDED.equals(role)) {
      throw new BundleException(where + ": chat system_role " + PyRepr.repr(role) + " is not one of ('native', 'folded')");
    }
    Map<?, ?> f = (Map<?, ?>) form;
    Object trim = f.containsKey("trim") ? f.get("trim") : Boolean.FALSE;
    if (!(trim instanceof Boolean)) {
      throw new BundleException(where + ": chat form 'trim' must be true or false");
    }
    Object roles = f.get("roles");
    if (!(roles instanceof Map) || !((Map<?, ?>) roles).containsKey("user") || !((Map<?, ?>) roles).containsKey("assistant")) {
      throw new BundleException(where + ": chat form 'roles' must give at least 'user' and 'assistant'");
    }
    Map<String, RoleForm> out = new LinkedHashMap<String, RoleForm>();
    for (Map.Entry<?, ?> e : ((Map<?, ?>) roles).entrySet()) {
      String what = "role " + PyRepr.repr(String.valueOf(e.getKey()));
      out.put(String.valueOf(e.getKey()), new RoleForm(text(e.getValue(), "before", what, where), text(e.getValue(), "after", what, where)));
    }
    return new ChatForm(out, text(f, "no_system_prefix", "field", where), text(f, "generation_prompt", "field", where),
        (String) role, (Boolean) trim);
  }

  private static String text(Object mapping, String key, String what, String where) {
    Object v = mapping instanceof Map ? ((Map<?, ?>) mapping).get(key) : null;
    if (!(v instanceof String)) {
      throw new BundleException(where + ": chat form " + what + " " + PyRepr.repr(key) + " must be a string");
    }
    return (String) v;
  }

  /** The messages with the system message folded into the first user message (no system message: unchanged). */
  public static List<ChatMessage> foldSystem(List<ChatMessage> messages) {
    List<ChatMessage> out = new ArrayList<ChatMessage>(messages);
    List<Integer> systems = new ArrayList<Integer>();
    int firstUser = -1;
    for (int i = 0; i < out.size(); i++) {
      if ("system".equals(out.get(i).role)) {
        systems.add(i);
      } else if (firstUser < 0 && "user".equals(out.get(i).role)) {
        firstUser = i;
      }
    }
    if (systems.isEmpty()) {
      return out;
    }
    if (!systems.equals(Collections.singletonList(0))) {
      throw new MemloraException("a folded system message must be the first message, and only one");
    }
    if (firstUser < 0) {
      throw new MemloraException("a folded system message needs a user message to fold into");
    }
    ChatMessage system = out.remove(0);
    ChatMessage user = out.get(firstUser - 1);
    out.set(firstUser - 1, new ChatMessage(user.role, system.content + FOLD_SEPARATOR + user.content));
    return out;
  }

  /** The prompt text of {@code messages}, byte for byte what the model's Jinja template renders. */
  public String render(List<ChatMessage> messages, boolean addGenerationPrompt) {
    List<ChatMessage> ms = FOLDED.equals(systemRole) ? foldSystem(messages) : messages;
    if (ms.isEmpty()) {
      throw new MemloraException("cannot render an empty conversation");
    }
    StringBuilder out = new StringBuilder();
    if (!"system".equals(ms.get(0).role)) {
      out.append(noSystemPrefix);
    }
    for (int i = 0; i < ms.size(); i++) {
      ChatMessage m = ms.get(i);
      RoleForm form = m.role == null ? null : roles.get(m.role);
      if (form == null) {
        throw new MemloraException("message " + i + " has role " + PyRepr.repr(m.role) + "; the chat form has "
            + String.join(", ", roles.keySet()));
      }
      if (m.content == null) {
        throw new MemloraException("message " + i + " content must be a string, got NoneType");
      }
      out.append(form.before).append(trim ? PyStr.strip(m.content) : m.content).append(form.after);
    }
    if (addGenerationPrompt) {
      out.append(generationPrompt);
    }
    return out.toString();
  }
}
