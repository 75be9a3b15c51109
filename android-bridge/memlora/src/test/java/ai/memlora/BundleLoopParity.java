package ai.memlora;

import java.io.File;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import org.junit.Test;

/**
 * The Java loop on a REAL bundle through the real ONNX Runtime GenAI Java API replays Python's
 * {@code Memory.from_bundle} run ({@code tests/android/bundle_loop.py} writes {@code bundle_loop.json}): per engine
 * call the same messages, adapter, budget, prompt text (chat form vs Jinja), prompt token ids, generated token ids
 * and decoded text; per step the same facts, events, tagged rejections, retrieved ids, answers and memories; the same
 * store rows after every step. Run by {@code tests/android/test_bundle_parity.py} (not a *Test: it needs the bundle).
 */
public class BundleLoopParity {
  /** Delegates to {@link OrtGenAiEngine} and records each call as Python's RecordingEngine does. */
  static final class RecordingEngine implements Engine {
    final OrtGenAiEngine engine;
    final List<Object> calls = new ArrayList<Object>();

    RecordingEngine(OrtGenAiEngine engine) {
      this.engine = engine;
    }

    @Override
    public List<String> adapters() {
      return engine.adapters();
    }

    @Override
    public Generation generate(List<ChatMessage> messages, String adapter, int maxNewTokens, int minNewTokens) {
      Generation g = engine.generate(messages, adapter, maxNewTokens, minNewTokens);
      Map<String, Object> call = new LinkedHashMap<String, Object>();
      List<Object> ms = new ArrayList<Object>();
      for (ChatMessage m : messages) {
        ms.add(m.toMap());
      }
      call.put("messages", ms);
      call.put("adapter", adapter);
      call.put("max_new_tokens", (long) maxNewTokens);
      call.put("min_new_tokens", (long) minNewTokens);
      call.put("prompt", engine.render(messages));
      List<Object> promptIds = new ArrayList<Object>();
      for (int id : engine.promptIds(messages)) {
        promptIds.add((long) id);
      }
      call.put("prompt_ids", promptIds);
      List<Object> tokenIds = new ArrayList<Object>();
      for (int id : g.tokenIds) {
        tokenIds.add((long) id);
      }
      call.put("token_ids", tokenIds);
      call.put("text", g.text);
      calls.add(call);
      return g;
    }

    @Override
    public int countTokens(String text) {
      return engine.countTokens(text);
    }

    @Override
    public void close() {
      engine.close();
    }
  }

  @SuppressWarnings("unchecked")
  @Test
  public void javaLoopOnTheBundleMatchesPython() {
    List<Map<String, Object>> cases = Golden.cases("bundle_loop.json");
    Map<String, Object> cfg = cases.get(0);
    int dim = ((Number) cfg.get("dim")).intValue();
    BundleManifest bundle = BundleManifest.load(new File((String) cfg.get("bundle")), true);
    MemoryConfig config = new MemoryConfig();
    config.threads = ((Number) cfg.get("threads")).intValue();
    for (Map.Entry<String, Object> e : Golden.map(cfg.get("min_new_tokens")).entrySet()) {
      config.minNewTokens.put(e.getKey(), ((Number) e.getValue()).intValue());
    }
    OrtGenAiEngine ort = new OrtGenAiEngine(bundle, config.threads);
    RecordingEngine engine = new RecordingEngine(ort);
    MemoryStore store = new MemoryStore(JdbcSqlDatabase.open(":memory:"), dim, Golden.counter("m%d"),
        Golden.clock("2024-02-01T10:00:%02d+00:00"));
    MemoryLoopGoldenTest.TableEmbedder embedder = new MemoryLoopGoldenTest.TableEmbedder(Golden.map(cfg.get("vectors")), dim);
    Memory memory = Memory.fromBundle(bundle, engine, embedder, store, config);
    Golden.Report report = new Golden.Report("bundle loop");
    report.check("threads", cfg.get("threads"), (long) ort.threads());
    report.check("session_overlay", cfg.get("session_overlay"), OrtGenAiEngine.sessionOverlay(ort.threads()));
    report.check("prompt_set", cfg.get("prompt_set"), config.promptSet);
    Map<String, Object> budgets = new LinkedHashMap<String, Object>();
    for (String stage : MemoryConfig.STAGES) {
      budgets.put(stage, (long) config.budget(stage));
    }
    report.check("max_new_tokens", cfg.get("max_new_tokens"), budgets);
    Map<String, Object> minimums = new LinkedHashMap<String, Object>();
    for (Map.Entry<String, Integer> e : config.minNewTokens.entrySet()) {
      minimums.put(e.getKey(), (long) e.getValue());
    }
    report.check("min_new_tokens", cfg.get("min_new_tokens"), minimums);
    report.check("stage_adapters", cfg.get("stage_adapters"), Golden.jsonable(memory.stageAdapters()));
    try {
      for (Map<String, Object> c : cases.subList(1, cases.size())) {
        String id = (String) c.get("id");
        Map<String, Object> step = Golden.map(c.get("step"));
        Map<String, Object> expected = Golden.map(c.get("result"));
        String op = (String) step.get("op");
        String user = (String) step.get("user_id");
        engine.calls.clear();
        try {
          if (op.equals("seed")) {
            List<String> texts = (List<String>) (List<?>) step.get("texts");
            List<ResolvedOp> ops = new ArrayList<ResolvedOp>();
            for (String t : texts) {
              ops.add(new ResolvedOp("ADD", null, t, null));
            }
            float[][] vs = embedder.encode(texts);
            Map<String, float[]> vectors = new LinkedHashMap<String, float[]>();
            for (int i = 0; i < texts.size(); i++) {
              vectors.put(texts.get(i), vs[i]);
            }
            MemoryStore.BatchEvents batch = store.applyUpdate(user, ops, vectors, null, null,
                (String) step.get("timestamp"), null, null, null, new ArrayList<Rejection>(), "seed");
            report.check(id + " events", expected.get("events"),
                Golden.events(new ArrayList<MemoryStore.MemoryEvent>(batch.events)));
          } else if (op.equals("add")) {
            Memory.AddResult r = memory.add((List<Map<String, ?>>) (List<?>) step.get("messages"), user,
                (String) step.get("timestamp"), null, null, null);
            report.check(id + " result", expected, Golden.addResult(r));
          } else {
            Memory.AnswerResult r = memory.answer((String) step.get("question"), user);
            report.check(id + " text", expected.get("text"), r.text);
            Golden.checkHits(report, id + " memories", expected.get("memories"), Golden.hits(r.memories, true));
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
