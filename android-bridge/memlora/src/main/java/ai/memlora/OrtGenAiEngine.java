package ai.memlora;

import ai.onnxruntime.genai.Adapters;
import ai.onnxruntime.genai.GenAIException;
import ai.onnxruntime.genai.Generator;
import ai.onnxruntime.genai.GeneratorParams;
import ai.onnxruntime.genai.Model;
import ai.onnxruntime.genai.Sequences;
import ai.onnxruntime.genai.Tokenizer;
import java.io.File;
import java.util.ArrayList;
import java.util.Collections;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

/**
 * {@link Engine} on ONNX Runtime GenAI for a verified bundle (Python's {@code OrtGenAIEngine}): one base
 * {@link Model} with every externalized expert loaded into one {@link Adapters} container, plus one Model
 * per merged expert. Each call builds a NEW {@link Generator} (an adapter, once active, stays active for
 * the generator's life: {@code setActiveAdapter} is additive), activates the stage's adapter BEFORE
 * appending the prompt tokens, and decodes greedily.
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

  private final Served base;
  private final Adapters adapters;
  private final Map<String, Served> merged = new LinkedHashMap<String, Served>();
  private final List<String> externalized = new ArrayList<String>();
  private final List<String> names = new ArrayList<String>();

  /** Loads the base model, its adapters and the merged experts of {@code bundle}. */
  public OrtGenAiEngine(BundleManifest bundle) {
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

  private static Served load(File dir) throws GenAIException {
    Model model = new Model(dir.getPath());
    return new Served(model, new Tokenizer(model));
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

  @Override
  public Generation generate(List<ChatMessage> messages, String adapter, int maxNewTokens) {
    Served served = servedFor(adapter);
    long t0 = System.nanoTime();
    GeneratorParams params = null;
    Generator generator = null;
    try {
      String prompt = served.tokenizer.applyChatTemplate(null, ChatMessage.toJson(messages), null, true);
      int[] promptIds;
      Sequences encoded = served.tokenizer.encode(prompt);
      try {
        promptIds = encoded.getSequence(0);
      } finally {
        encoded.close();
      }
      params = new GeneratorParams(served.model);
      params.setSearchOption("max_length", promptIds.length + maxNewTokens);
      params.setSearchOption("do_sample", false);
      long tSwitch = System.nanoTime();
      generator = new Generator(served.model, params);
      if (adapter != null && externalized.contains(adapter)) {
        generator.setActiveAdapter(adapters, adapter); // before appendTokens: the prompt runs with the expert
      }
      double switchS = (System.nanoTime() - tSwitch) / 1e9;
      generator.appendTokens(promptIds);
      List<Integer> ids = new ArrayList<Integer>();
      long tFirst = 0;
      while (!generator.isDone() && ids.size() < maxNewTokens) {
        generator.generateNextToken();
        ids.add(generator.getLastTokenInSequence(0));
        if (tFirst == 0) {
          tFirst = System.nanoTime();
        }
      }
      int[] out = new int[ids.size()];
      for (int k = 0; k < out.length; k++) {
        out[k] = ids.get(k);
      }
      String text = served.tokenizer.decode(out);
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
    try {
      Sequences s = base.tokenizer.encode(text);
      try {
        return s.getSequence(0).length;
      } finally {
        s.close();
      }
    } catch (GenAIException e) {
      throw new MemloraException("tokenization failed: " + e.getMessage(), e);
    }
  }

  @Override
  public void close() {
    if (adapters != null) {
      adapters.close();
    }
    for (Served s : merged.values()) {
      s.tokenizer.close();
      s.model.close();
    }
    if (base != null) {
      base.tokenizer.close();
      base.model.close();
    }
  }
}
