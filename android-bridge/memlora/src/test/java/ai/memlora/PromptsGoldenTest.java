package ai.memlora;

import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import org.junit.Test;

/** Every rendered prompt equals the Python rendering byte for byte; inputs Python refuses are refused. */
public class PromptsGoldenTest {
  @SuppressWarnings("unchecked")
  private static List<Map<String, ?>> maps(Object v) {
    return (List<Map<String, ?>>) v;
  }

  static List<ChatMessage> render(Map<String, Object> c) {
    Map<String, Object> in = Golden.map(c.get("input"));
    String ps = (String) in.get("prompt_set");
    String kind = (String) c.get("kind");
    if (kind.equals("extraction")) {
      return Prompts.extractionMessages(maps(in.get("messages")), ps, (String) in.get("today"));
    } else if (kind.equals("update")) {
      return Prompts.updateMessages(maps(in.get("old_memories")), Golden.list(in.get("facts")), ps);
    } else if (kind.equals("generation")) {
      List<Prompts.TimedText> lines = new ArrayList<Prompts.TimedText>();
      for (Object row : Golden.list(in.get("memories"))) {
        List<Object> pair = Golden.list(row);
        lines.add(new Prompts.TimedText((String) pair.get(0), (String) pair.get(1)));
      }
      return Prompts.generationMessages((String) in.get("question"), lines, ps);
    } else if (kind.equals("vqa")) {
      return Prompts.vqaMessages((String) in.get("question"), ps);
    }
    throw new AssertionError("unknown prompt kind " + kind);
  }

  @Test
  public void renderingsMatchPython() {
    Golden.Report report = new Golden.Report(
        "prompts (if runtime/prompts.py changed, run android-bridge/tools/gen_prompt_templates.py)");
    for (Map<String, Object> c : Golden.cases("prompts.json")) {
      String id = (String) c.get("id");
      if (c.containsKey("error")) {
        try {
          List<ChatMessage> got = render(c);
          report.fail(id, "Python refused (" + c.get("error") + ") but Java rendered " + got);
        } catch (MemloraException expected) {
          report.check(id, Boolean.TRUE, Boolean.TRUE);
        }
        continue;
      }
      try {
        report.check(id, c.get("expected"), Golden.jsonable(render(c)));
      } catch (MemloraException e) {
        report.fail(id, "Java refused: " + e.getMessage());
      }
    }
    report.assertAllPassed();
  }
}
