package ai.memlora;

import java.util.ArrayList;
import java.util.Arrays;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import org.junit.Test;

/**
 * The loop (Memory.add / answer / search) replays Python's scripted session: same engine calls (prompts,
 * adapters, budgets), same facts, events, tagged rejections, retrieved memories, answers and store state.
 * The engine returns the outputs Python's engine returned; the embedder returns Python's vectors.
 */
public class MemoryLoopGoldenTest {
  /** Returns scripted outputs and records each call. */
  static final class ScriptedEngine implements Engine {
    final List<String> outputs = new ArrayList<String>();
    final List<Object> calls = new ArrayList<Object>();

    @Override
    public List<String> adapters() {
      return Arrays.asList("extraction", "update", "generation");
    }

    @Override
    public Generation generate(List<ChatMessage> messages, String adapter, int maxNewTokens, int minNewTokens) {
      Map<String, Object> call = new LinkedHashMap<String, Object>();
      call.put("messages", Golden.jsonable(messages));
      call.put("adapter", adapter);
      call.put("max_new_tokens", (long) maxNewTokens);
      call.put("min_new_tokens", (long) minNewTokens);
      calls.add(call);
      if (outputs.isEmpty()) {
        throw new MemloraException("scripted engine: no output left for this call");
      }
      return Generation.ofText(outputs.remove(0));
    }

    @Override
    public int countTokens(String text) {
      return text.split("\\s+").length;
    }

    @Override
    public void close() {}
  }

  /** Python's vectors by text; an unknown text means the Java flow embedded something Python did not. */
  static final class TableEmbedder implements Embedder {
    final Map<String, Object> table;
    final int dim;

    TableEmbedder(Map<String, Object> table, int dim) {
      this.table = table;
      this.dim = dim;
    }

    @Override
    public int dim() {
      return dim;
    }

    @Override
    public float[][] encode(List<String> texts) {
      float[][] out = new float[texts.size()][];
      for (int i = 0; i < texts.size(); i++) {
        if (!table.containsKey(texts.get(i))) {
          throw new AssertionError("Java embedded a text Python never embedded: " + PyRepr.repr(texts.get(i)));
        }
        out[i] = Golden.floats(table.get(texts.get(i)));
      }
      return out;
    }

    @Override
    public void close() {}
  }

  @SuppressWarnings("unchecked")
  @Test
  public void scriptedSessionMatchesPython() {
    List<Map<String, Object>> cases = Golden.cases("loop.json");
    Map<String, Object> cfg = cases.get(0);
    int dim = ((Number) cfg.get("dim")).intValue();
    ScriptedEngine engine = new ScriptedEngine();
    MemoryStore store = new MemoryStore(JdbcSqlDatabase.open(":memory:"), dim, Golden.counter("m%d"),
        Golden.clock("2024-02-01T10:00:%02d+00:00"));
    MemoryConfig config = new MemoryConfig();
    config.topS = ((Number) cfg.get("top_s")).intValue();
    config.answerK = ((Number) cfg.get("answer_k")).intValue();
    for (Map.Entry<String, Object> e : Golden.map(cfg.get("max_new_tokens")).entrySet()) {
      config.maxNewTokens.put(e.getKey(), ((Number) e.getValue()).intValue());
    }
    Memory memory = new Memory(engine, new TableEmbedder(Golden.map(cfg.get("vectors")), dim), store, config);
    Golden.Report report = new Golden.Report("loop");
    report.check("stage_adapters", cfg.get("stage_adapters"), Golden.jsonable(memory.stageAdapters()));
    try {
      for (Map<String, Object> c : cases.subList(1, cases.size())) {
        String id = (String) c.get("id");
        Map<String, Object> step = Golden.map(c.get("step"));
        engine.outputs.clear();
        engine.calls.clear();
        if (step.containsKey("outputs")) {
          for (Object o : Golden.list(step.get("outputs"))) {
            engine.outputs.add((String) o);
          }
        }
        String op = (String) step.get("op");
        Map<String, Object> expected = "search".equals(op) ? null : Golden.map(c.get("result"));
        try {
          if (op.equals("add")) {
            Memory.AddResult r = memory.add((List<Map<String, ?>>) (List<?>) step.get("messages"),
                (String) step.get("user_id"), (String) step.get("timestamp"), Golden.map(step.get("metadata")),
                null, null);
            report.check(id + " result", expected, Golden.addResult(r));
          } else if (op.equals("answer")) {
            Object k = step.get("k");
            Memory.AnswerResult r = memory.answer((String) step.get("question"), (String) step.get("user_id"),
                k == null ? 0 : ((Number) k).intValue());
            report.check(id + " text", expected.get("text"), r.text);
            Golden.checkHits(report, id + " memories", expected.get("memories"), Golden.hits(r.memories, true));
          } else {
            Object k = step.get("k");
            Golden.checkHits(report, id, c.get("result"),
                Golden.hits(memory.search((String) step.get("query"), (String) step.get("user_id"),
                    k == null ? 0 : ((Number) k).intValue()), true));
          }
        } catch (RuntimeException e) {
          report.fail(id, "Java threw " + e);
          continue;
        }
        Golden.checkStepState(report, id, c, engine.calls, store);
      }
    } finally {
      memory.close();
    }
    report.assertAllPassed();
  }
}
