package ai.memlora;

import java.util.Collections;
import java.util.List;
import java.util.Map;

/** One stored memory (the columns of the {@code memories} table, as {@code memlora.runtime.store.MemoryRecord}). */
public final class MemoryRecord {
  public final String id;
  public final String userId;
  public final String agentId;
  public final String runId;
  public final String text;
  /** MD5 hex digest of the UTF-8 text (Mem0's memory hash). */
  public final String hash;
  public final String createdAt;
  public final String updatedAt;
  /** Conversation time the memory comes from, as given (may be null). */
  public final String timestamp;
  public final List<String> sourceIds;
  public final List<String> imageRefs;
  /** Free-form JSON metadata, parsed (maps, lists, strings, numbers, booleans, null). */
  public final Map<String, Object> metadata;

  public MemoryRecord(
      String id, String userId, String agentId, String runId, String text, String hash, String createdAt,
      String updatedAt, String timestamp, List<String> sourceIds, List<String> imageRefs,
      Map<String, Object> metadata) {
    this.id = id;
    this.userId = userId;
    this.agentId = agentId;
    this.runId = runId;
    this.text = text;
    this.hash = hash;
    this.createdAt = createdAt;
    this.updatedAt = updatedAt;
    this.timestamp = timestamp;
    this.sourceIds = Collections.unmodifiableList(sourceIds);
    this.imageRefs = Collections.unmodifiableList(imageRefs);
    this.metadata = Collections.unmodifiableMap(metadata);
  }
}
