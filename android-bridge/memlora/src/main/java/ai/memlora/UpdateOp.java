package ai.memlora;

/** One memory operation proposed by the update expert (ids are the small prompt ids, not real memory ids). */
public final class UpdateOp {
  /** The prompt id as a string (null when absent). */
  public final String id;
  /** New memory text (ADD/UPDATE), or the model's echo of the memory (DELETE/NONE; may be empty). */
  public final String text;
  /** One of ADD, UPDATE, DELETE, NONE. */
  public final String event;
  /** The model's copy of the previous text (UPDATE), informational only; may be null. */
  public final String oldMemory;

  public UpdateOp(String id, String text, String event, String oldMemory) {
    this.id = id;
    this.text = text;
    this.event = event;
    this.oldMemory = oldMemory;
  }

  @Override
  public String toString() {
    return "UpdateOp(id=" + PyRepr.repr(id) + ", text=" + PyRepr.repr(text) + ", event=" + PyRepr.repr(event)
        + ", old_memory=" + PyRepr.repr(oldMemory) + ")";
  }
}
