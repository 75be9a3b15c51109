package ai.memlora;

import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import org.junit.Test;

/** IdMap numbering and resolve(): same real ids, same rejections (unknown ids, duplicates) as Python. */
public class UpdateGoldenTest {
  @Test
  public void resolutionMatchesPython() {
    Golden.Report report = new Golden.Report("update");
    for (Map<String, Object> c : Golden.cases("update.json")) {
      String id = (String) c.get("id");
      List<String[]> shown = new ArrayList<String[]>();
      for (Object row : Golden.list(c.get("shown"))) {
        List<Object> pair = Golden.list(row);
        shown.add(new String[] {(String) pair.get(0), (String) pair.get(1)});
      }
      IdMap idMap = new IdMap(shown);
      report.check(id + " id_map", c.get("id_map"), Golden.jsonable(idMap.asMap()));
      report.check(id + " prompt_memories", c.get("prompt_memories"), Golden.jsonable(idMap.promptMemories()));
      List<UpdateOp> ops = new ArrayList<UpdateOp>();
      if (c.containsKey("ops")) {
        for (Object o : Golden.list(c.get("ops"))) {
          Map<String, Object> op = Golden.map(o);
          ops.add(
              new UpdateOp(
                  (String) op.get("id"), (String) op.get("text"), (String) op.get("event"),
                  (String) op.get("old_memory")));
        }
      } else {
        ops.addAll(OutputParser.parseMemoryUpdate((String) c.get("text")).value);
      }
      try {
        MemoryUpdate update = MemoryUpdate.resolve(ops, idMap);
        report.check(id + " resolved", c.get("resolved"), Golden.jsonable(update.resolved));
        report.check(id + " rejected", c.get("rejected"), Golden.rejections(update.rejected));
      } catch (RuntimeException e) {
        report.fail(id, "Java threw " + e);
      }
    }
    report.assertAllPassed();
  }
}
