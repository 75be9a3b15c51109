package ai.memlora;

import ai.onnxruntime.genai.Adapters;
import ai.onnxruntime.genai.Config;
import ai.onnxruntime.genai.GenAI;
import ai.onnxruntime.genai.GenAIException;
import ai.onnxruntime.genai.Generator;
import ai.onnxruntime.genai.GeneratorParams;
import ai.onnxruntime.genai.Model;
import ai.onnxruntime.genai.Sequences;
import ai.onnxruntime.genai.Tokenizer;
import java.io.File;
import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.Collections;
import java.util.LinkedHashMap;
import java.util.LinkedHashSet;
import java.util.List;
import java.util.Map;
import java.util.Set;

/**
 * {@link Engine} on ONNX Runtime GenAI for a verified bundle (Python's {@code OrtGenAIEngine}): one base
 * {@link Model} with every externalized expert loaded into one {@link Adapters} container, plus one Model
 * per merged expert, each loaded through a {@link Config} carrying the session threads. Each call renders the
 * prompt with the bundle's {@link ChatForm} (the same bytes as Python's Jinja rendering; no template string
 * ever reaches GenAI's {@code applyChatTemplate}), builds a NEW {@link Generator} (an adapter, once active,
 * stays active for the generator's life: {@code setActiveAdapter} is additive), activates the stage's adapter
 * BEFORE appending the prompt tokens, and decodes greedily until an EOS id of {@code genai_config.json}, the
 * token budget or the context length, as Python does.
 */
public final class OrtGenAiEngine implements Engine {
  private static final class Served {
    final Model model;
    final Tokenizer tokenizer;

    Served(Model model, Tokenizer tokenizer) {
      this.model = model;
      this.tokenizer = tokenizer;
    }
  }

  private final ChatForm form;
  private final int threads;
  private final int contextLength;
  private final Set<Integer> eosIds = new LinkedHashSet<Integer>();
  private Served base;
  private Adapters adapters;
  private final Map<String, Served> merged = new LinkedHashMap<String, Served>();
  private final List<String> externalized = new ArrayList<String>();
  private final List<String> names = new ArrayList<String>();

  /** {@link #OrtGenAiEngine(BundleManifest, int)} with ONNX Runtime's default threads. */
  public OrtGenAiEngine(BundleManifest bundle) {
    this(bundle, 0);
  }

  /**
   * Loads the base model, its adapters and the merged experts of {@code bundle}; {@code threads} &gt; 0 sets the
   * decoder sessions' intra-op threads (and one inter-op thread), as Python's {@code threads}. A bundle without a
   * chat form is refused before anything is loaded.
   */
  @SuppressWarnings("unchecked")
  public OrtGenAiEngine(BundleManifest bundle, int threads) {
    form = ChatForm.fromChatJson(bundle.chat, bundle.root.getPath() + "/" + BundleManifest.MANIFEST);
    this.threads = threads;
    Map<String, Object> genai;
    File configFile = new File(bundle.baseDir, "genai_config.json");
    try {
      Object parsed = StrictJson.loads(new String(BundleManifest.readAll(configFile), StandardCharsets.UTF_8));
      Object model = parsed instanceof Map ? ((Map<String, Object>) parsed).get("model") : null;
      if (!(model instanceof Map)) {
        throw new BundleException(configFile + ": no 'model' object");
      }
      genai = (Map<String, Object>) model;
    } catch (IOException | StrictJson.Invalid e) {
      throw new BundleException(configFile + ": cannot read it (" + e.getMessage() + ")");
    }
    Object context = genai.get("context_length");
    contextLength = context instanceof Number ? ((Number) context).intValue() : 0;
    Object eos = genai.get("eos_token_id");
    for (Object e : eos instanceof List ? (List<Object>) eos : Collections.singletonList(eos)) {
      if (e instanceof Number) {
        eosIds.add(((Number) e).intValue());
      }
    }
    GenAI.setTelemetry(false); // no telemetry events, as Python's disable_telemetry_events()
    try {
      base = load(bundle.baseDir);
      adapters = new Adapters(base.model);
      for (BundleManifest.Expert expert : bundle.experts.values()) {
        if ("externalized".equals(expert.mode)) {
          adapters.loadAdapter(expert.adapterFile.getPath(), expert.stage);
          externalized.add(expert.stage);
        } else {
          merged.put(expert.stage, load(expert.modelDir));
        }
        names.add(expert.stage);
      }
    } catch (GenAIException e) {
      close();
      throw new MemloraException("cannot load the bundle's model: " + e.getMessage(), e);
    }
  }

  /**
   * The JSON overlaid on {@code genai_config.json} for {@code threads} (Python's {@code _session_overlay}); "" for 0.
   */
  public static String sessionOverlay(int threads) {
    if (threads <= 0) {
      return "";
    }
    Map<String, Object> options = new LinkedHashMap<String, Object>();
    options.put("intra_op_num_threads", (long) threads);
    options.put("inter_op_num_threads", 1L);
    Map<String, Object> decoder = new LinkedHashMap<String, Object>();
    decoder.put("session_options", options);
    Map<String, Object> model = new LinkedHashMap<String, Object>();
    model.put("decoder", decoder);
    Map<String, Object> root = new LinkedHashMap<String, Object>();
    root.put("model", model);
    return PyJson.dumps(root, ", ", ": ", false);
  }

  private Served load(File dir) throws GenAIException {
    Config config = new Config(dir.getPath());
    Model model;
    try {
      String overlay = sessionOverlay(threads);
      if (!overlay.isEmpty()) {
        config.overlay(overlay);
      }
      model = new Model(config);
    } finally {
      config.close();
    }
    return new Served(model, new Tokenizer(model));
  }

  /** Intra-op threads the models were loaded with (0: ONNX Runtime's default). */
  public int threads() {
    return threads;
  }

  /** The bundle's chat form. */
  public ChatForm chatForm() {
    return form;
  }

  @Override
  public List<String> adapters() {
    return Collections.unmodifiableList(names);
  }

  private Served servedFor(String adapter) {
    if (adapter == null) {
      return base;
    }
    if (merged.containsKey(adapter)) {
      return merged.get(adapter);
    }
    if (externalized.contains(adapter)) {
      return base;
    }
    throw new AdapterException("unknown adapter " + PyRepr.repr(adapter) + "; the bundle has " + names);
  }

  /** The prompt text of {@code messages} (chat form + generation prompt). */
  public String render(List<ChatMessage> messages) {
    return form.render(messages, true);
  }

  /** Token ids of the rendered prompt (what {@link #generate} appends). */
  public int[] promptIds(List<ChatMessage> messages) {
    return encode(base.tokenizer, render(messages));
  }

  private static int[] encode(Tokenizer tokenizer, String text) {
    try {
      Sequences encoded = tokenizer.encode(text);
      try {
        return encoded.getSequence(0);
      } finally {
        encoded.close();
      }
    } catch (GenAIException e) {
      throw new MemloraException("tokenization failed: " + e.getMessage(), e);
    }
  }

  /**
   * The token of a step that ended the sequence: GenAI does not append the EOS it picks (the sequence stops one short),
   * and its Java API has no {@code getNextTokens}, so a step that left the sequence as long as before picked an EOS;
   * it is recorded as the config's first {@code eos_token_id} (Python reads the very id; they differ only when a
   * model with several EOS ids picks another one, with the same text).
   */
  private int endOfSequence() {
    if (eosIds.isEmpty()) {
      throw new MemloraException("the model ended its sequence but its genai_config.json names no eos_token_id");
    }
    return eosIds.iterator().next();
  }

  @Override
  public Generation generate(List<ChatMessage> messages, String adapter, int maxNewTokens, int minNewTokens) {
    Served served = servedFor(adapter);
    long t0 = System.nanoTime();
    int[] promptIds = encode(served.tokenizer, render(messages));
    if (contextLength > 0 && promptIds.length >= contextLength) {
      throw new MemloraException("prompt of " + promptIds.length + " tokens does not fit the model's context of "
          + contextLength);
    }
    int budget = contextLength > 0 ? Math.min(maxNewTokens, contextLength - promptIds.length) : maxNewTokens;
    budget = Math.max(budget, 1);
    GeneratorParams params = null;
    Generator generator = null;
    try {
      params = new GeneratorParams(served.model);
      params.setSearchOption("max_length", promptIds.length + budget);
      params.setSearchOption("do_sample", false);
      int minimum = Math.max(0, Math.min(minNewTokens, budget));
      if (minimum > 0) {
        params.setSearchOption("min_length", promptIds.length + minimum); // counts the prompt: EOS refused until then
      }
      long tSwitch = System.nanoTime();
      generator = new Generator(served.model, params);
      if (adapter != null && externalized.contains(adapter)) {
        generator.setActiveAdapter(adapters, adapter); // before appendTokens: the prompt runs with the expert
      }
      double switchS = (System.nanoTime() - tSwitch) / 1e9;
      generator.appendTokens(promptIds);
      List<Integer> ids = new ArrayList<Integer>();
      long tFirst = 0;
      while (ids.size() < budget) {
        long length = generator.tokenCount();
        generator.generateNextToken();
        int token = generator.tokenCount() > length ? generator.getLastTokenInSequence(0) : endOfSequence();
        ids.add(token);
        if (tFirst == 0) {
          tFirst = System.nanoTime();
        }
        if (eosIds.contains(token) || generator.isDone()) {
          break;
        }
      }
      int n = !ids.isEmpty() && eosIds.contains(ids.get(ids.size() - 1)) ? ids.size() - 1 : ids.size();
      int[] textIds = new int[n];
      for (int k = 0; k < n; k++) {
        textIds[k] = ids.get(k);
      }
      String text = served.tokenizer.decode(textIds);
      long tEnd = System.nanoTime();
      double prefill = tFirst == 0 ? 0 : (tFirst - t0) / 1e9;
      double decode = tFirst == 0 ? 0 : (tEnd - tFirst) / 1e9;
      return new Generation(text, promptIds.length, ids.size(), ids, prefill, decode, switchS, (tEnd - t0) / 1e9);
    } catch (GenAIException e) {
      throw new MemloraException("generation failed (adapter " + PyRepr.repr(adapter) + "): " + e.getMessage(), e);
    } finally {
      if (generator != null) {
        generator.close();
      }
      if (params != null) {
        params.close();
      }
    }
  }

  @Override
  public int countTokens(String text) {
    return encode(base.tokenizer, text).length;
  }

  @Override
  public void close() {
    if (adapters != null) {
      adapters.close();
      adapters = null;
    }
    for (Served s : merged.values()) {
      s.tokenizer.close();
      s.model.close();
    }
    merged.clear();
    if (base != null) {
      base.tokenizer.close();
      base.model.close();
      base = null;
    }
  }
}
