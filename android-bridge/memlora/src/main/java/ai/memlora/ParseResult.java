package ai.memlora;

import java.util.Collections;
import java.util.List;

/** What a parser returns: the valid value, what was rejected, whether the output was fully valid, the cleaned text. */
public final class ParseResult<T> {
  /** Valid items only (empty list / null when nothing valid was found). */
  public final T value;
  /** Items dropped with the reason. */
  public final List<Rejection> rejected;
  /** True when the expected JSON was found and nothing was rejected. */
  public final boolean ok;
  /** The text after removing reasoning and code fences (what the JSON was searched in). */
  public final String cleaned;

  public ParseResult(T value, List<Rejection> rejected, boolean ok, String cleaned) {
    this.value = value;
    this.rejected = Collections.unmodifiableList(rejected);
    this.ok = ok;
    this.cleaned = cleaned;
  }
}
