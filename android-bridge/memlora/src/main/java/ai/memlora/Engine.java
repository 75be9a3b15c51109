package ai.memlora;

import java.io.Closeable;
import java.util.List;

/**
 * Greedy text generation with a switchable expert adapter: the one interface the loop talks to
 * (Python's {@code memlora.runtime.engine.Engine}). {@link OrtGenAiEngine} runs a bundle on device.
 */
public interface Engine extends Closeable {
  /** Names of the expert adapters this engine can activate. */
  List<String> adapters();

  /**
   * Renders {@code messages} with the model's chat template, activates {@code adapter} (null: base
   * model) and decodes greedily up to {@code maxNewTokens} tokens, refusing EOS until {@code minNewTokens} exist.
   */
  Generation generate(List<ChatMessage> messages, String adapter, int maxNewTokens, int minNewTokens);

  /** Number of tokens {@code text} encodes to. */
  int countTokens(String text);

  @Override
  void close();
}
