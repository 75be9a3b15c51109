package ai.memlora;

import java.util.ArrayList;
import java.util.Collections;
import java.util.HashMap;
import java.util.HashSet;
import java.util.List;
import java.util.Map;
import java.util.Set;

/**
 * From the update expert's operations to operations on real memories; mirrors {@code
 * memlora.runtime.update.resolve}. Anything the model could get wrong is rejected with a reason, never
 * guessed: UPDATE/DELETE of an id that was not shown, a second operation on one id, an ADD that repeats
 * a shown memory or an earlier ADD, an UPDATE that changes nothing. NONE is ignored.
 */
public final class MemoryUpdate {
  /** Operations to apply, in the model's order. */
  public final List<ResolvedOp> resolved;
  /** Operations dropped, with the reason. */
  public final List<Rejection> rejected;

  public MemoryUpdate(List<ResolvedOp> resolved, List<Rejection> rejected) {
    this.resolved = Collections.unmodifiableList(resolved);
    this.rejected = Collections.unmodifiableList(rejected);
  }

  /** Maps the model's operations onto real memories. */
  public static MemoryUpdate resolve(List<UpdateOp> ops, IdMap idMap) {
    List<ResolvedOp> resolved = new ArrayList<ResolvedOp>();
    List<Rejection> rejected = new ArrayList<Rejection>();
    Set<String> claimed = new HashSet<String>();
    Map<String, String> shownTexts = new HashMap<String, String>();
    for (int k = 0; k < idMap.size(); k++) {
      shownTexts.put(idMap.text(String.valueOf(k)), String.valueOf(k)); // a later duplicate text wins
    }
    Set<String> added = new HashSet<String>();
    for (UpdateOp op : ops) {
      if ("NONE".equals(op.event)) {
        continue;
      }
      if ("ADD".equals(op.event)) {
        if (shownTexts.containsKey(op.text)) {
          rejected.add(new Rejection(op, "ADD duplicates memory " + shownTexts.get(op.text)));
        } else if (added.contains(op.text)) {
          rejected.add(new Rejection(op, "ADD repeats an earlier ADD of this batch"));
        } else {
          added.add(op.text);
          resolved.add(new ResolvedOp("ADD", null, op.text, null));
        }
        continue;
      }
      if (!("UPDATE".equals(op.event) || "DELETE".equals(op.event)) || op.id == null) {
        rejected.add(new Rejection(op, "invalid operation " + op.event + " without an id"));
        continue;
      }
      if (!idMap.contains(op.id)) {
        rejected.add(new Rejection(op, op.event + " of " + idMap.whyUnknown(op.id)));
        continue;
      }
      if (claimed.contains(op.id)) {
        rejected.add(
            new Rejection(op, op.event + " of id " + op.id + ": an earlier operation on this id wins"));
        continue;
      }
      String oldText = idMap.text(op.id);
      if ("UPDATE".equals(op.event) && op.text.equals(oldText)) {
        rejected.add(new Rejection(op, "UPDATE of id " + op.id + " leaves the text unchanged"));
        continue;
      }
      claimed.add(op.id);
      String text = "UPDATE".equals(op.event) ? op.text : oldText;
      resolved.add(new ResolvedOp(op.event, idMap.get(op.id), text, oldText));
    }
    return new MemoryUpdate(resolved, rejected);
  }
}
