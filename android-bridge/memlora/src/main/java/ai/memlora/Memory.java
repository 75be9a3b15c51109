package ai.memlora;

import java.io.Closeable;
import java.io.File;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.Collections;
import java.util.LinkedHashMap;
import java.util.LinkedHashSet;
import java.util.List;
import java.util.Map;

/**
 * The memory loop, the same flow as {@code memlora.runtime.memory.Memory}: Mem0's four operations,
 * one expert adapter per operation.
 *
 * <pre>
 * add(messages, userId)
 *   1. extraction expert:  conversation                       -> {"facts": [...]}
 *   2. retrieval:          embed each fact, topS memories of the user (union, first seen first)
 *   3. update expert:      memories as "0", "1", ... + facts  -> {"memory": [{id, text, event}, ...]}
 *   4. apply:              small ids -> real ids, ADD/UPDATE/DELETE in ONE store transaction
 * answer(question, userId)
 *   retrieve answerK memories -> generation expert over "[timestamp] memory" lines -> short answer
 * </pre>
 *
 * Model output never breaks the loop: whatever cannot be used comes back as a {@link Rejection}
 * (reason prefixed with the stage) and is recorded in the store.
 */
public final class Memory implements Closeable {
  /** What {@link #add} did. */
  public static final class AddResult {
    public final List<String> facts;
    public final List<MemoryStore.MemoryEvent> events;
    public final List<Rejection> rejected;
    /** Raw engine output per stage that ran ("extraction", "update"). */
    public final Map<String, Generation> generations;
    /** The memories shown to the update expert, in prompt-id order. */
    public final List<MemoryStore.SearchHit> retrieved;

    AddResult(List<String> facts, List<MemoryStore.MemoryEvent> events, List<Rejection> rejected,
        Map<String, Generation> generations, List<MemoryStore.SearchHit> retrieved) {
      this.facts = Collections.unmodifiableList(facts);
      this.events = Collections.unmodifiableList(events);
      this.rejected = Collections.unmodifiableList(rejected);
      this.generations = Collections.unmodifiableMap(generations);
      this.retrieved = Collections.unmodifiableList(retrieved);
    }
  }

  /** What {@link #answer} returns. */
  public static final class AnswerResult {
    public final String text;
    /** The memories the answer was generated from, best first. */
    public final List<MemoryStore.SearchHit> memories;
    public final Generation generation;

    AnswerResult(String text, List<MemoryStore.SearchHit> memories, Generation generation) {
      this.text = text;
      this.memories = Collections.unmodifiableList(memories);
      this.generation = generation;
    }
  }

  private final Engine engine;
  private final Embedder embedder;
  private final MemoryStore store;
  private final MemoryConfig config;
  private final String promptSet;
  private final Map<String, String> stageAdapters;

  public Memory(Engine engine, Embedder embedder, MemoryStore store, MemoryConfig config) {
    this.engine = engine;
    this.embedder = embedder;
    this.store = store;
    this.config = config != null ? config : new MemoryConfig();
    this.promptSet = this.config.promptSet != null ? this.config.promptSet : "memlora";
    Prompts.getPromptSet(promptSet); // fail now on an unknown prompt set
    this.stageAdapters = resolveStageAdapters();
  }

  /**
   * The three-line setup on a device: verify the bundle (in full at its first open, then sizes and mtimes:
   * {@link BundleManifest#open}), load the engine (with {@code config.threads}) and the embedder from it, open the
   * store in {@code storeDir} (created).
   */
  public static Memory open(File bundleDir, File storeDir, MemoryConfig config) {
    BundleManifest bundle = BundleManifest.open(bundleDir);
    MemoryConfig cfg = config != null ? config : new MemoryConfig();
    OrtEmbedder embedder = OrtEmbedder.fromBundle(bundle, cfg.threads);
    OrtGenAiEngine engine = null;
    try {
      engine = new OrtGenAiEngine(bundle, cfg.threads);
      return fromBundle(bundle, engine, embedder, MemoryStore.open(storeDir, embedder.dim()), cfg);
    } catch (RuntimeException e) {
      embedder.close();
      if (engine != null) {
        engine.close();
      }
      throw e;
    }
  }

  /**
   * The loop over a bundle's engine (Python's {@code Memory.from_bundle}): the per-stage token budgets and the prompt
   * set come from the manifest unless {@code config} sets them.
   */
  public static Memory fromBundle(BundleManifest bundle, Engine engine, Embedder embedder, MemoryStore store,
      MemoryConfig config) {
    MemoryConfig cfg = config != null ? config : new MemoryConfig();
    for (BundleManifest.Expert e : bundle.experts.values()) {
      if (e.maxNewTokens instanceof Number && ((Number) e.maxNewTokens).longValue() != 0
          && !cfg.maxNewTokens.containsKey(e.stage)) {
        cfg.maxNewTokens.put(e.stage, ((Number) e.maxNewTokens).intValue());
      }
    }
    if (cfg.promptSet == null) {
      cfg.promptSet = bundle.sharedPromptSet(); // null (experts disagree): "memlora", as in Python
    }
    return new Memory(engine, embedder, store, cfg);
  }

  public MemoryStore store() {
    return store;
  }

  /** Stage -> adapter (null = base model). */
  public Map<String, String> stageAdapters() {
    return Collections.unmodifiableMap(stageAdapters);
  }

  private Map<String, String> resolveStageAdapters() {
    List<String> stages = Arrays.asList(MemoryConfig.STAGES);
    for (Map.Entry<String, String> e : config.stageAdapters.entrySet()) {
      if (!stages.contains(e.getKey())) {
        throw new MemloraException("unknown stage " + PyRepr.repr(e.getKey())
            + " in stage_adapters; stages are extraction, update, generation, vqa");
      }
      if (e.getValue() != null && !engine.adapters().contains(e.getValue())) {
        throw new AdapterException("stage " + PyRepr.repr(e.getKey()) + " asks for adapter " + PyRepr.repr(e.getValue())
            + "; the engine has " + PyRepr.repr(new ArrayList<Object>(engine.adapters())));
      }
    }
    Map<String, String> out = new LinkedHashMap<String, String>();
    for (String s : stages) {
      if (config.stageAdapters.containsKey(s)) {
        out.put(s, config.stageAdapters.get(s));
      } else {
        out.put(s, engine.adapters().contains(s) ? s : null);
      }
    }
    return out;
  }

  private Generation run(String stage, List<ChatMessage> messages) {
    return engine.generate(messages, stageAdapters.get(stage), config.budget(stage), config.minimum(stage));
  }

  private static List<Rejection> tagged(String stage, List<Rejection> rejections) {
    List<Rejection> out = new ArrayList<Rejection>();
    for (Rejection r : rejections) {
      out.add(new Rejection(r.item, stage + ": " + r.reason));
    }
    return out;
  }

  /** Stage 2: for each fact, the topS most similar memories of the user; their union, first seen first. */
  List<MemoryStore.SearchHit> retrieveForUpdate(List<String> facts, String userId, String agentId, String runId) {
    Map<String, MemoryStore.SearchHit> hits = new LinkedHashMap<String, MemoryStore.SearchHit>();
    for (float[] vector : embedder.encode(facts)) {
      for (MemoryStore.SearchHit hit : store.search(userId, vector, config.topS, agentId, runId)) {
        if (!hits.containsKey(hit.record.id)) {
          hits.put(hit.record.id, hit);
        }
      }
    }
    return new ArrayList<MemoryStore.SearchHit>(hits.values());
  }

  /** {@link #add(List, String, String, Map, String, String)} for one user turn. */
  public AddResult add(String userText, String userId) {
    Map<String, Object> m = new LinkedHashMap<String, Object>();
    m.put("role", "user");
    m.put("content", userText);
    return add(Collections.<Map<String, ?>>singletonList(m), userId, null, null, null, null);
  }

  /** Remembers what matters in {@code messages} ({"role", "content", optional "dia_id"}). */
  public AddResult add(List<? extends Map<String, ?>> messages, String userId, String timestamp,
      Map<String, ?> metadata, String agentId, String runId) {
    if (userId == null || userId.isEmpty()) {
      throw new MemloraException("user_id must be a non-empty string, got " + PyRepr.repr(userId));
    }
    Generation extraction = run("extraction", Prompts.extractionMessages(messages, promptSet, null));
    ParseResult<List<String>> facts = OutputParser.parseFacts(extraction.text);
    List<Rejection> rejected = new ArrayList<Rejection>(tagged("extraction", facts.rejected));
    Map<String, Generation> generations = new LinkedHashMap<String, Generation>();
    generations.put("extraction", extraction);
    List<ResolvedOp> resolved = new ArrayList<ResolvedOp>();
    List<MemoryStore.SearchHit> retrieved = new ArrayList<MemoryStore.SearchHit>();
    if (!facts.value.isEmpty()) {
      retrieved = retrieveForUpdate(facts.value, userId, agentId, runId);
      List<MemoryRecord> shown = new ArrayList<MemoryRecord>();
      for (MemoryStore.SearchHit h : retrieved) {
        shown.add(h.record);
      }
      IdMap idMap = IdMap.fromMemories(shown);
      Generation update = run("update", Prompts.updateMessages(idMap.promptMemories(), facts.value, promptSet));
      generations.put("update", update);
      ParseResult<List<UpdateOp>> ops = OutputParser.parseMemoryUpdate(update.text);
      MemoryUpdate resolution = MemoryUpdate.resolve(ops.value, idMap);
      resolved.addAll(resolution.resolved);
      List<Rejection> updateRejected = new ArrayList<Rejection>(ops.rejected);
      updateRejected.addAll(resolution.rejected);
      rejected.addAll(tagged("update", updateRejected));
    }
    if (resolved.isEmpty() && rejected.isEmpty()) {
      return new AddResult(facts.value, new ArrayList<MemoryStore.MemoryEvent>(), rejected, generations, retrieved);
    }
    // Embed before the transaction, so the store writes everything or nothing.
    LinkedHashSet<String> texts = new LinkedHashSet<String>();
    for (ResolvedOp op : resolved) {
      if (op.event.equals("ADD") || op.event.equals("UPDATE")) {
        texts.add(op.text);
      }
    }
    List<String> textList = new ArrayList<String>(texts);
    float[][] encoded = embedder.encode(textList);
    Map<String, float[]> vectors = new LinkedHashMap<String, float[]>();
    for (int i = 0; i < textList.size(); i++) {
      vectors.put(textList.get(i), encoded[i]);
    }
    List<String> sources = new ArrayList<String>();
    for (Map<String, ?> m : messages) {
      Object dia = m.get("dia_id");
      if (dia != null) {
        sources.add(PyRepr.str(dia));
      }
    }
    MemoryStore.BatchEvents batch = store.applyUpdate(userId, resolved, vectors, agentId, runId, timestamp, sources,
        null, metadata, rejected, "memory.add");
    List<Rejection> all = new ArrayList<Rejection>(rejected);
    all.addAll(tagged("store", batch.rejected));
    return new AddResult(facts.value, new ArrayList<MemoryStore.MemoryEvent>(batch.events), all, generations, retrieved);
  }

  /** The k (0: answerK) memories of the user closest to {@code query}, best first. */
  public List<MemoryStore.SearchHit> search(String query, String userId, int k) {
    float[] vector = embedder.encode(Collections.singletonList(query))[0];
    return store.search(userId, vector, k != 0 ? k : config.answerK, null, null);
  }

  /** Answers {@code question} from the user's memories with the generation expert. */
  public AnswerResult answer(String question, String userId, int k) {
    List<MemoryStore.SearchHit> memories = search(question, userId, k);
    List<Prompts.TimedText> shown = new ArrayList<Prompts.TimedText>();
    for (MemoryStore.SearchHit hit : memories) {
      shown.add(new Prompts.TimedText(hit.record.timestamp, hit.record.text));
    }
    Generation generation = run("generation", Prompts.generationMessages(question, shown, promptSet));
    return new AnswerResult(PyStr.strip(generation.text), memories, generation);
  }

  /** {@link #answer(String, String, int)} with k = answerK. */
  public AnswerResult answer(String question, String userId) {
    return answer(question, userId, 0);
  }

  public MemoryRecord get(String memoryId) {
    return store.get(memoryId);
  }

  public List<MemoryRecord> getAll(String userId) {
    return store.getAll(userId, null, null, null);
  }

  /** Replaces a memory's text by hand (re-embedded). */
  public MemoryStore.MemoryEvent update(String memoryId, String text) {
    float[] vector = embedder.encode(Collections.singletonList(text))[0];
    return store.update(memoryId, text, vector, null, null, "memory.update");
  }

  public MemoryStore.MemoryEvent delete(String memoryId) {
    return store.delete(memoryId, "memory.delete");
  }

  public List<MemoryStore.MemoryEvent> deleteAll(String userId) {
    return store.deleteAll(userId, null, null, "memory.delete_all");
  }

  public List<MemoryStore.HistoryEntry> history(String memoryId) {
    return store.history(memoryId);
  }

  public void reset() {
    store.reset();
  }

  @Override
  public void close() {
    try {
      store.close();
    } finally {
      try {
        embedder.close();
      } finally {
        engine.close();
      }
    }
  }
}
