package ai.memlora;

/** One operation to apply to the store, on real ids. */
public final class ResolvedOp {
  /** ADD, UPDATE or DELETE. */
  public final String event;
  /** The real memory id (null for ADD: the store assigns one). */
  public final String memoryId;
  /** New text (ADD/UPDATE); the current text of the memory for DELETE. */
  public final String text;
  /** The text shown to the model for this memory (UPDATE/DELETE); null for ADD. */
  public final String oldText;

  public ResolvedOp(String event, String memoryId, String text, String oldText) {
    this.event = event;
    this.memoryId = memoryId;
    this.text = text;
    this.oldText = oldText;
  }
}
