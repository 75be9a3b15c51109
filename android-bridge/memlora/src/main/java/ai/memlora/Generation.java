package ai.memlora;

import java.util.Collections;
import java.util.List;

/** What an engine returns for one call (Python's {@code memlora.runtime.engine.Generation}). */
public final class Generation {
  /** Decoded completion (special tokens removed). */
  public final String text;
  /** Tokens in the rendered prompt. */
  public final int promptTokens;
  /** Tokens generated (EOS included when it was produced). */
  public final int completionTokens;
  /** Generated token ids. */
  public final List<Integer> tokenIds;
  /** Seconds: prompt + first token, the remaining tokens, adapter activation, the whole call. */
  public final double prefillS;
  public final double decodeS;
  public final double switchS;
  public final double totalS;

  public Generation(String text, int promptTokens, int completionTokens, List<Integer> tokenIds, double prefillS,
      double decodeS, double switchS, double totalS) {
    this.text = text;
    this.promptTokens = promptTokens;
    this.completionTokens = completionTokens;
    this.tokenIds = Collections.unmodifiableList(tokenIds);
    this.prefillS = prefillS;
    this.decodeS = decodeS;
    this.switchS = switchS;
    this.totalS = totalS;
  }

  /** A generation with only a text (for engines that do not count tokens). */
  public static Generation ofText(String text) {
    return new Generation(text, 0, 0, Collections.<Integer>emptyList(), 0, 0, 0, 0);
  }
}
