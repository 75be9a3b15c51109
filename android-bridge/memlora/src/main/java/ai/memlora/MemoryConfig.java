package ai.memlora;

import java.util.LinkedHashMap;
import java.util.Map;

/** How the loop runs; every field has a default (Python's {@code MemoryConfig}). */
public final class MemoryConfig {
  /** Stages of the loop, in order ({@code memlora.STAGES}). */
  public static final String[] STAGES = {"extraction", "update", "generation", "vqa"};

  /**
   * Prompt set: "memlora" (compact, for the experts), "memlora-textfirst" (compact, each memory's text before its
   * id and its timestamp) or "mem0" (Mem0's long prompts). Null: the one the bundle's experts share ({@link Memory#open}), else
   * "memlora".
   */
  public String promptSet = null;
  /** Stage -> adapter name (null value = base model); stages left out use the adapter named like the stage if any. */
  public Map<String, String> stageAdapters = new LinkedHashMap<String, String>();
  /** Memories retrieved per extracted fact for the update stage (Mem0's default 5). */
  public int topS = 5;
  /** Memories retrieved for answer generation and the default k of search (Mem0's LoCoMo protocol: 30). */
  public int answerK = 30;
  /** Generation budget per stage (left-out stages take the defaults below). */
  public Map<String, Integer> maxNewTokens = new LinkedHashMap<String, Integer>();
  /**
   * Tokens per stage before EOS is allowed (left-out stages: 0; none by default). {@code extraction=1, update=1}
   * refuses an empty JSON output (Python's {@code min_new_tokens}).
   */
  public Map<String, Integer> minNewTokens = new LinkedHashMap<String, Integer>();
  /** Intra-op threads of the engine's decoder sessions and of the embedder (0: ONNX Runtime's default). */
  public int threads;

  public static Map<String, Integer> defaultMaxNewTokens() {
    Map<String, Integer> m = new LinkedHashMap<String, Integer>();
    m.put("extraction", 128);
    m.put("update", 256);
    m.put("generation", 64);
    m.put("vqa", 64);
    return m;
  }

  /** Tokens {@code stage} must produce before EOS is allowed. */
  public int minimum(String stage) {
    Integer v = minNewTokens.get(stage);
    return v != null ? v : 0;
  }

  /** The budget of {@code stage}. */
  public int budget(String stage) {
    Integer v = maxNewTokens.get(stage);
    return v != null ? v : defaultMaxNewTokens().get(stage);
  }
}
