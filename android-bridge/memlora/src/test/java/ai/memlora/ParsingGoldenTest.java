package ai.memlora;

import java.util.LinkedHashMap;
import java.util.Map;
import org.junit.Test;

/** parse_facts / parse_memory_update / parse_vqa give the same values, rejections and verdicts as Python. */
public class ParsingGoldenTest {
  static Map<String, Object> result(ParseResult<?> r) {
    Map<String, Object> m = new LinkedHashMap<String, Object>();
    m.put("value", Golden.jsonable(r.value));
    m.put("rejected", Golden.rejections(r.rejected));
    m.put("ok", r.ok);
    m.put("cleaned", r.cleaned);
    return m;
  }

  static ParseResult<?> parse(String kind, String text) {
    if (kind.equals("facts")) {
      return OutputParser.parseFacts(text);
    } else if (kind.equals("memory")) {
      return OutputParser.parseMemoryUpdate(text);
    } else if (kind.equals("vqa")) {
      return OutputParser.parseVqa(text);
    }
    throw new AssertionError("unknown parse kind " + kind);
  }

  @Test
  public void corpusMatchesPython() {
    Golden.Report report = new Golden.Report("parsing");
    for (Map<String, Object> c : Golden.cases("parsing.json")) {
      String id = (String) c.get("id");
      try {
        report.check(id, c.get("expected"), result(parse((String) c.get("kind"), (String) c.get("text"))));
      } catch (RuntimeException e) {
        report.fail(id, "Java threw " + e);
      }
    }
    report.assertAllPassed();
  }
}
