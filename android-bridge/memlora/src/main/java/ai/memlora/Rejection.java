package ai.memlora;

/** One item of model output (or one operation) that was dropped, and why. */
public final class Rejection {
  /** The offending item as parsed (a JSON value, an {@link UpdateOp}, or the raw text). */
  public final Object item;
  /** Human-readable reason (the same text as the Python runtime's). */
  public final String reason;

  public Rejection(Object item, String reason) {
    this.item = item;
    this.reason = reason;
  }

  @Override
  public String toString() {
    return "Rejection(" + PyRepr.repr(item instanceof UpdateOp ? item.toString() : item) + ", " + reason + ")";
  }
}
