package ai.memlora;

import java.io.File;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import org.junit.Test;

/**
 * {@link ChatForm} renders every fixture conversation byte for byte as the model's Jinja template does in Python
 * (ChatML, a default system message, a BOS with trimmed contents, a folded system role), refuses the chat objects
 * Python refuses with the same message, and a bundle without a chat form never reaches GenAI's JNI layer.
 */
public class ChatFormGoldenTest {
  @SuppressWarnings("unchecked")
  @Test
  public void rendersLikeJinja() {
    Golden.Report report = new Golden.Report("chat form");
    for (Map<String, Object> c : Golden.cases("chat_form.json")) {
      String id = (String) c.get("id");
      ChatForm form;
      try {
        form = ChatForm.fromChatJson(c.get("chat"), "bundle.json");
      } catch (BundleException e) {
        report.check(id, c.containsKey("load_error") ? c.get("load_error") : "(accepted)", e.getMessage());
        continue;
      }
      if (c.containsKey("load_error")) {
        report.fail(id, "accepted a chat object Python refuses: " + c.get("load_error"));
        continue;
      }
      List<ChatMessage> messages = new ArrayList<ChatMessage>();
      for (Object m : Golden.list(c.get("messages"))) {
        Map<String, Object> mm = Golden.map(m);
        messages.add(new ChatMessage((String) mm.get("role"), (String) mm.get("content")));
      }
      try {
        String got = form.render(messages, (Boolean) c.get("add_generation_prompt"));
        report.check(id, c.containsKey("error") ? "error: " + c.get("error") : c.get("expected"), got);
      } catch (MemloraException e) {
        report.check(id, c.containsKey("error") ? c.get("error") : c.get("expected"), e.getMessage());
      }
    }
    report.assertAllPassed();
  }

  /** The manifest fixtures' valid bundle has no "chat": the engine refuses it before loading anything. */
  @Test
  public void aBundleWithoutChatFormNeverReachesJni() {
    BundleManifest bundle = BundleManifest.load(new File(Golden.dir(), "bundles/valid"), false);
    if (bundle.chat != null) {
      throw new AssertionError("the fixture bundle was expected to have no chat object");
    }
    try {
      new OrtGenAiEngine(bundle, 1).close();
      throw new AssertionError("OrtGenAiEngine accepted a bundle without a chat form");
    } catch (BundleException e) {
      if (!e.getMessage().contains("no chat form")) {
        throw new AssertionError("unexpected refusal: " + e.getMessage());
      }
    }
  }
}
