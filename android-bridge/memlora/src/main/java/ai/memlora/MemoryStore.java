package ai.memlora;

import java.io.Closeable;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.charset.StandardCharsets;
import java.security.MessageDigest;
import java.security.NoSuchAlgorithmException;
import java.text.SimpleDateFormat;
import java.util.ArrayList;
import java.util.Collections;
import java.util.Date;
import java.util.HashMap;
import java.util.HashSet;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.Set;
import java.util.TimeZone;
import java.util.TreeMap;
import java.util.UUID;

/**
 * The durable memory store, a mirror of {@code memlora.runtime.store.MemoryStore}: SQLite is the source
 * of truth (same schema, same append-only {@code history} table, same {@code rejections} and {@code
 * meta}), and an in-memory {@link VectorIndex} is derived from the embeddings stored in SQLite when the
 * store opens. A store directory written by Python opens here and the other way round (Python
 * rebuilds its FAISS index when it finds it stale).
 *
 * <p>Every {@link #applyUpdate}, {@link #update}, {@link #delete}, {@link #deleteAll} and {@link
 * #reset} is one SQLite transaction: a batch is either entirely there or not at all.
 */
public final class MemoryStore implements Closeable {
  /** Version of the SQLite schema (the Python store's {@code SCHEMA_VERSION}). */
  public static final int SCHEMA_VERSION = 1;

  static final String[] SCHEMA = {
    "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS memories (\n"
        + "    key INTEGER PRIMARY KEY AUTOINCREMENT,\n"
        + "    id TEXT NOT NULL UNIQUE,\n"
        + "    user_id TEXT NOT NULL,\n"
        + "    agent_id TEXT,\n"
        + "    run_id TEXT,\n"
        + "    text TEXT NOT NULL,\n"
        + "    hash TEXT NOT NULL,\n"
        + "    created_at TEXT NOT NULL,\n"
        + "    updated_at TEXT,\n"
        + "    timestamp TEXT,\n"
        + "    source_ids TEXT NOT NULL DEFAULT '[]',\n"
        + "    image_refs TEXT NOT NULL DEFAULT '[]',\n"
        + "    metadata TEXT NOT NULL DEFAULT '{}',\n"
        + "    vector BLOB NOT NULL\n"
        + ")",
    "CREATE INDEX IF NOT EXISTS memories_user ON memories(user_id, agent_id, run_id)",
    "CREATE TABLE IF NOT EXISTS history (\n"
        + "    id INTEGER PRIMARY KEY AUTOINCREMENT,\n"
        + "    memory_id TEXT NOT NULL,\n"
        + "    user_id TEXT NOT NULL,\n"
        + "    event TEXT NOT NULL CHECK (event IN ('ADD', 'UPDATE', 'DELETE')),\n"
        + "    old_text TEXT,\n"
        + "    new_text TEXT,\n"
        + "    created_at TEXT NOT NULL,\n"
        + "    batch INTEGER NOT NULL,\n"
        + "    actor TEXT\n"
        + ")",
    "CREATE INDEX IF NOT EXISTS history_memory ON history(memory_id)",
    "CREATE TRIGGER IF NOT EXISTS history_no_update BEFORE UPDATE ON history\n"
        + "BEGIN SELECT RAISE(ABORT, 'history is append-only'); END",
    "CREATE TRIGGER IF NOT EXISTS history_no_delete BEFORE DELETE ON history\n"
        + "BEGIN SELECT RAISE(ABORT, 'history is append-only'); END",
    "CREATE TABLE IF NOT EXISTS rejections (\n"
        + "    id INTEGER PRIMARY KEY AUTOINCREMENT,\n"
        + "    batch INTEGER NOT NULL,\n"
        + "    user_id TEXT NOT NULL,\n"
        + "    item TEXT NOT NULL,\n"
        + "    reason TEXT NOT NULL,\n"
        + "    created_at TEXT NOT NULL\n"
        + ")",
  };

  private static final String RECORD_COLUMNS =
      "id, user_id, agent_id, run_id, text, hash, created_at, updated_at, timestamp, source_ids, image_refs, metadata";

  /** Makes new memory ids (default: random UUID4 strings). */
  public interface IdFactory {
    String newId();
  }

  /** Returns the current time as an ISO-8601 string (default: UTC now). */
  public interface Clock {
    String now();
  }

  /** A search result: the memory and its cosine similarity to the query. */
  public static final class SearchHit {
    public final MemoryRecord record;
    public final float score;

    public SearchHit(MemoryRecord record, float score) {
      this.record = record;
      this.score = score;
    }
  }

  /** What one applied operation did (Mem0's {@code {"id", "memory", "event", "previous_memory"}}). */
  public static final class MemoryEvent {
    public final String id;
    public final String event;
    /** The memory text after the event (the deleted text for DELETE). */
    public final String text;
    /** The text before an UPDATE or DELETE (null for ADD). */
    public final String oldText;

    public MemoryEvent(String id, String event, String text, String oldText) {
      this.id = id;
      this.event = event;
      this.text = text;
      this.oldText = oldText;
    }
  }

  /** The events of one batch, its number, and the operations the store itself refused (stale ids). */
  public static final class BatchEvents {
    public final List<MemoryEvent> events;
    public final long batch;
    public final List<Rejection> rejected;

    BatchEvents(List<MemoryEvent> events, long batch, List<Rejection> rejected) {
      this.events = Collections.unmodifiableList(events);
      this.batch = batch;
      this.rejected = Collections.unmodifiableList(rejected);
    }
  }

  /** One row of the append-only history. */
  public static final class HistoryEntry {
    public final long id;
    public final String memoryId;
    public final String userId;
    public final String event;
    public final String oldText;
    public final String newText;
    public final String createdAt;
    public final long batch;
    public final String actor;

    HistoryEntry(Object[] row) {
      id = (Long) row[0];
      memoryId = (String) row[1];
      userId = (String) row[2];
      event = (String) row[3];
      oldText = (String) row[4];
      newText = (String) row[5];
      createdAt = (String) row[6];
      batch = (Long) row[7];
      actor = (String) row[8];
    }
  }

  /** One operation refused in a batch, as recorded (the item is the parsed JSON of what was stored). */
  public static final class RejectionEntry {
    public final long batch;
    public final String userId;
    public final Object item;
    public final String reason;
    public final String createdAt;

    RejectionEntry(long batch, String userId, Object item, String reason, String createdAt) {
      this.batch = batch;
      this.userId = userId;
      this.item = item;
      this.reason = reason;
      this.createdAt = createdAt;
    }
  }

  private final SqlDatabase db;
  private final int dim;
  private final IdFactory idFactory;
  private final Clock clock;
  private final VectorIndex index;
  private final Map<String, Set<Long>> userKeys = new HashMap<String, Set<Long>>();
  private boolean closed;

  /**
   * Opens a store over {@code db} (schema created when empty).
   *
   * @param dim embedding size; must match an existing store
   * @param idFactory new memory ids (null: UUID4)
   * @param clock ISO-8601 time (null: UTC now)
   */
  public MemoryStore(SqlDatabase db, int dim, IdFactory idFactory, Clock clock) {
    if (dim <= 0) {
      throw new StoreException("dim must be a positive integer, got " + dim);
    }
    this.db = db;
    this.dim = dim;
    this.idFactory = idFactory != null ? idFactory : new IdFactory() {
      @Override
      public String newId() {
        return UUID.randomUUID().toString();
      }
    };
    this.clock = clock != null ? clock : new Clock() {
      @Override
      public String now() {
        SimpleDateFormat f = new SimpleDateFormat("yyyy-MM-dd'T'HH:mm:ss.SSS'000+00:00'", Locale.US);
        f.setTimeZone(TimeZone.getTimeZone("UTC"));
        return f.format(new Date());
      }
    };
    this.index = new VectorIndex(dim);
    try {
      for (String statement : SCHEMA) {
        db.execute(statement);
      }
      initMeta();
    } catch (MemloraException e) {
      if (e instanceof StoreException) {
        throw e;
      }
      throw new StoreException("cannot open the memory database: " + e.getMessage());
    }
    rebuildIndex();
  }

  /** Opens {@code dir/memory.db} on Android (the directory Python's store uses). */
  public static MemoryStore open(java.io.File dir, int dim) {
    if (dir.exists() && !dir.isDirectory()) {
      throw new StoreException("memory store path " + dir + " exists and is not a directory");
    }
    if (!dir.isDirectory() && !dir.mkdirs()) {
      throw new StoreException("cannot create the memory store directory " + dir);
    }
    return new MemoryStore(AndroidSqlDatabase.open(new java.io.File(dir, "memory.db")), dim, null, null);
  }

  public int dim() {
    return dim;
  }

  private void initMeta() {
    Map<String, String> meta = new HashMap<String, String>();
    for (Object[] row : db.query("SELECT key, value FROM meta")) {
      meta.put((String) row[0], (String) row[1]);
    }
    if (meta.isEmpty()) {
      db.begin();
      try {
        db.execute("INSERT INTO meta(key, value) VALUES (?, ?)", "schema", String.valueOf(SCHEMA_VERSION));
        db.execute("INSERT INTO meta(key, value) VALUES (?, ?)", "dim", String.valueOf(dim));
        db.execute("INSERT INTO meta(key, value) VALUES (?, ?)", "batch_seq", "0");
        db.commit();
      } catch (RuntimeException e) {
        db.rollback();
        throw e;
      }
      return;
    }
    if (!String.valueOf(SCHEMA_VERSION).equals(meta.get("schema"))) {
      throw new StoreException(
          "memory database schema " + meta.get("schema") + " is not supported (this version reads " + SCHEMA_VERSION + ")");
    }
    if (!String.valueOf(dim).equals(meta.get("dim"))) {
      throw new StoreException(
          "the memory store holds " + meta.get("dim") + "-d vectors, but dim=" + dim + " was given (use the same embedder)");
    }
  }

  private long batchSeq() {
    return Long.parseLong((String) db.query("SELECT value FROM meta WHERE key = 'batch_seq'").get(0)[0]);
  }

  /** Rebuilds the vector index from the embeddings stored in SQLite (key order, as Python's rebuild). */
  public synchronized void rebuildIndex() {
    index.clear();
    userKeys.clear();
    for (Object[] row : db.query("SELECT key, user_id, vector FROM memories ORDER BY key")) {
      long key = (Long) row[0];
      index.add(key, fromBlob((byte[]) row[2]));
      keysOf((String) row[1]).add(key);
    }
  }

  private Set<Long> keysOf(String userId) {
    Set<Long> keys = userKeys.get(userId);
    if (keys == null) {
      keys = new HashSet<Long>();
      userKeys.put(userId, keys);
    }
    return keys;
  }

  // ------------------------------------------------------------------------------------------ helpers

  /** MD5 hex digest of the UTF-8 text (Mem0's memory hash). */
  public static String textHash(String text) {
    try {
      byte[] digest = MessageDigest.getInstance("MD5").digest(text.getBytes(StandardCharsets.UTF_8));
      StringBuilder out = new StringBuilder();
      for (byte b : digest) {
        out.append(String.format("%02x", b & 0xff));
      }
      return out.toString();
    } catch (NoSuchAlgorithmException e) {
      throw new IllegalStateException("MD5 unavailable", e);
    }
  }

  static byte[] toBlob(float[] v) {
    ByteBuffer buf = ByteBuffer.allocate(v.length * 4).order(ByteOrder.LITTLE_ENDIAN);
    for (float f : v) {
      buf.putFloat(f);
    }
    return buf.array();
  }

  static float[] fromBlob(byte[] blob) {
    ByteBuffer buf = ByteBuffer.wrap(blob).order(ByteOrder.LITTLE_ENDIAN);
    float[] v = new float[blob.length / 4];
    for (int k = 0; k < v.length; k++) {
      v[k] = buf.getFloat();
    }
    return v;
  }

  /** L2-normalised float32 copy; StoreException for a wrong size, zero or non-finite vector. */
  float[] normalised(float[] v, String what) {
    if (v == null) {
      throw new StoreException(what + ": not a numeric vector");
    }
    if (v.length != dim) {
      throw new StoreException(what + ": vector has " + v.length + " values, the store holds " + dim + "-d vectors");
    }
    double sq = 0.0;
    for (float f : v) {
      sq += (double) f * (double) f;
    }
    float norm = (float) Math.sqrt(sq);
    if (Float.isNaN(norm) || Float.isInfinite(norm) || norm == 0.0f) {
      throw new StoreException(what + ": vector is zero or not finite");
    }
    float[] out = new float[v.length];
    for (int k = 0; k < v.length; k++) {
      out[k] = v[k] / norm;
    }
    return out;
  }

  @SuppressWarnings("unchecked")
  private static MemoryRecord record(Object[] row, int offset) {
    try {
      return new MemoryRecord(
          (String) row[offset], (String) row[offset + 1], (String) row[offset + 2], (String) row[offset + 3],
          (String) row[offset + 4], (String) row[offset + 5], (String) row[offset + 6], (String) row[offset + 7],
          (String) row[offset + 8],
          (List<String>) StrictJson.rawDecode((String) row[offset + 9], 0),
          (List<String>) StrictJson.rawDecode((String) row[offset + 10], 0),
          (Map<String, Object>) StrictJson.rawDecode((String) row[offset + 11], 0));
    } catch (StrictJson.Invalid e) {
      throw new StoreException("corrupt JSON column in memory " + row[offset] + ": " + e.getMessage());
    }
  }

  private static List<String> mergeUnique(List<String> old, List<String> add) {
    List<String> out = new ArrayList<String>(old);
    for (String s : add) {
      if (!out.contains(s)) {
        out.add(s);
      }
    }
    return out;
  }

  /** {@code json.dumps(metadata, ensure_ascii=False, sort_keys=True)}. */
  static String metadataJson(Map<String, ?> metadata) {
    return PyJson.dumpsDefault(sortKeys(metadata == null ? new HashMap<String, Object>() : metadata));
  }

  private static Object sortKeys(Object v) {
    if (v instanceof Map) {
      Map<String, Object> out = new TreeMap<String, Object>(PY_STRING_ORDER);
      for (Map.Entry<?, ?> e : ((Map<?, ?>) v).entrySet()) {
        out.put(String.valueOf(e.getKey()), sortKeys(e.getValue()));
      }
      return out;
    }
    if (v instanceof List) {
      List<Object> out = new ArrayList<Object>();
      for (Object item : (List<?>) v) {
        out.add(sortKeys(item));
      }
      return out;
    }
    return v;
  }

  /** Python sorts str by code point; Java's String order is by UTF-16 unit (differs only above U+FFFF). */
  static final java.util.Comparator<String> PY_STRING_ORDER =
      new java.util.Comparator<String>() {
        @Override
        public int compare(String a, String b) {
          int i = 0;
          int j = 0;
          while (i < a.length() && j < b.length()) {
            int ca = a.codePointAt(i);
            int cb = b.codePointAt(j);
            if (ca != cb) {
              return ca < cb ? -1 : 1;
            }
            i += Character.charCount(ca);
            j += Character.charCount(cb);
          }
          return (a.length() - i) - (b.length() - j) < 0 ? -1 : ((a.length() - i) == (b.length() - j) ? 0 : 1);
        }
      };

  /** What the rejections table stores for an item ({@code json.dumps(asdict(item), ensure_ascii=False)}). */
  static String dumpItem(Object item) {
    return PyJson.dumpsDefault(itemJson(item));
  }

  /** {@code asdict(item)} for {@link UpdateOp} and {@link ResolvedOp} (fields in Python's order); else the item. */
  static Object itemJson(Object item) {
    if (item instanceof UpdateOp) {
      UpdateOp op = (UpdateOp) item;
      return JsonValues.object("id", op.id, "text", op.text, "event", op.event, "old_memory", op.oldMemory);
    }
    if (item instanceof ResolvedOp) {
      ResolvedOp op = (ResolvedOp) item;
      return JsonValues.object("event", op.event, "memory_id", op.memoryId, "text", op.text, "old_text", op.oldText);
    }
    return item;
  }

  private void checkOpen() {
    if (closed) {
      throw new StoreException("the memory store is closed");
    }
  }

  // ------------------------------------------------------------------------------------------ writing

  /**
   * Applies one batch in ONE transaction. {@code vectors} maps each ADD/UPDATE text to its embedding.
   * UPDATE/DELETE of a memory that is gone or belongs to another user is refused and recorded with the
   * caller's {@code rejected} items; the rest applies. Invalid input raises before anything is written.
   */
  public synchronized BatchEvents applyUpdate(
      String userId, List<ResolvedOp> ops, Map<String, float[]> vectors, String agentId, String runId,
      String timestamp, List<String> sourceIds, List<String> imageRefs, Map<String, ?> metadata,
      List<Rejection> rejected, String actor) {
    if (userId == null || userId.isEmpty()) {
      throw new StoreException("user_id must be a non-empty string, got " + PyRepr.repr(userId));
    }
    List<Object[]> prepared = new ArrayList<Object[]>();
    for (int i = 0; i < ops.size(); i++) {
      ResolvedOp op = ops.get(i);
      if (op == null || !("ADD".equals(op.event) || "UPDATE".equals(op.event) || "DELETE".equals(op.event))) {
        throw new StoreException("operation " + i + " must be a ResolvedOp with event ADD, UPDATE or DELETE");
      }
      if (op.event.equals("ADD") || op.event.equals("UPDATE")) {
        if (op.text == null || PyStr.strip(op.text).isEmpty()) {
          throw new StoreException("operation " + i + " (" + op.event + ") has no text");
        }
        if (!vectors.containsKey(op.text)) {
          throw new StoreException(
              "operation " + i + " (" + op.event + "): no vector given for its text " + PyRepr.repr(op.text));
        }
        prepared.add(new Object[] {op, normalised(vectors.get(op.text), "operation " + i + " (" + op.event + ")")});
      } else {
        prepared.add(new Object[] {op, null});
      }
      if ((op.event.equals("UPDATE") || op.event.equals("DELETE")) && op.memoryId == null) {
        throw new StoreException("operation " + i + " (" + op.event + ") has no memory id");
      }
    }
    List<String> sources = sourceIds == null ? new ArrayList<String>() : new ArrayList<String>(sourceIds);
    List<String> images = imageRefs == null ? new ArrayList<String>() : new ArrayList<String>(imageRefs);
    String metaJson = metadataJson(metadata);
    checkOpen();
    return writeBatch(userId, prepared, agentId, runId, timestamp, sources, images, metaJson,
        rejected == null ? new ArrayList<Rejection>() : rejected, actor, false);
  }

  private BatchEvents writeBatch(
      String userId, List<Object[]> prepared, String agentId, String runId, String timestamp,
      List<String> sources, List<String> images, String metaJson, List<Rejection> rejected, String actor,
      boolean strict) {
    String now = clock.now();
    List<MemoryEvent> events = new ArrayList<MemoryEvent>();
    List<Rejection> refused = new ArrayList<Rejection>();
    List<Object[]> indexAdds = new ArrayList<Object[]>();
    List<Long> indexRemoves = new ArrayList<Long>();
    List<Object[]> keyChanges = new ArrayList<Object[]>();
    long batch;
    db.begin();
    try {
      batch = batchSeq() + 1;
      db.execute("UPDATE meta SET value = ? WHERE key = 'batch_seq'", String.valueOf(batch));
      for (Object[] item : prepared) {
        ResolvedOp op = (ResolvedOp) item[0];
        float[] vector = (float[]) item[1];
        if (op.event.equals("ADD")) {
          String memoryId = idFactory.newId();
          if (memoryId == null || memoryId.isEmpty()) {
            throw new StoreException("id_factory returned " + PyRepr.repr(memoryId) + "; it must return non-empty strings");
          }
          if (!db.query("SELECT 1 FROM memories WHERE id = ?", memoryId).isEmpty()
              || !db.query("SELECT 1 FROM history WHERE memory_id = ?", memoryId).isEmpty()) {
            throw new StoreException("id_factory returned " + PyRepr.repr(memoryId) + ", which is already used");
          }
          long key = db.insert(
              "INSERT INTO memories (id, user_id, agent_id, run_id, text, hash, created_at, updated_at, timestamp,"
                  + " source_ids, image_refs, metadata, vector) VALUES (?, ?, ?, ?, ?, ?, ?, NULL, ?, ?, ?, ?, ?)",
              memoryId, userId, agentId, runId, op.text, textHash(op.text), now, timestamp,
              PyJson.dumpsDefault(sources), PyJson.dumpsDefault(images), metaJson, toBlob(vector));
          history(memoryId, userId, "ADD", null, op.text, now, batch, actor);
          indexAdds.add(new Object[] {key, vector});
          keyChanges.add(new Object[] {userId, key, Boolean.TRUE});
          events.add(new MemoryEvent(memoryId, "ADD", op.text, null));
          continue;
        }
        List<Object[]> rows = db.query(
            "SELECT key, user_id, text, source_ids, image_refs, metadata FROM memories WHERE id = ?", op.memoryId);
        if (rows.isEmpty() || !userId.equals(rows.get(0)[1])) {
          String reason = op.event + " of memory " + PyRepr.repr(op.memoryId) + ": "
              + (rows.isEmpty() ? "no such memory" : "it belongs to another user");
          if (strict) {
            throw new UnknownMemoryException(reason);
          }
          refused.add(new Rejection(op, reason));
          continue;
        }
        Object[] row = rows.get(0);
        long key = (Long) row[0];
        String oldText = (String) row[2];
        if (op.event.equals("UPDATE")) {
          Map<String, Object> merged = new LinkedHashMap<String, Object>(jsonMap((String) row[5]));
          merged.putAll(jsonMap(metaJson));
          db.execute(
              "UPDATE memories SET text = ?, hash = ?, updated_at = ?, timestamp = COALESCE(?, timestamp),"
                  + " source_ids = ?, image_refs = ?, metadata = ?, vector = ? WHERE key = ?",
              op.text, textHash(op.text), now, timestamp,
              PyJson.dumpsDefault(mergeUnique(jsonStrings((String) row[3]), sources)),
              PyJson.dumpsDefault(mergeUnique(jsonStrings((String) row[4]), images)),
              metadataJson(merged), toBlob(vector), key);
          history(op.memoryId, userId, "UPDATE", oldText, op.text, now, batch, actor);
          indexRemoves.add(key);
          indexAdds.add(new Object[] {key, vector});
          events.add(new MemoryEvent(op.memoryId, "UPDATE", op.text, oldText));
        } else {
          db.execute("DELETE FROM memories WHERE key = ?", key);
          history(op.memoryId, userId, "DELETE", oldText, null, now, batch, actor);
          indexRemoves.add(key);
          keyChanges.add(new Object[] {userId, key, Boolean.FALSE});
          events.add(new MemoryEvent(op.memoryId, "DELETE", oldText, oldText));
        }
      }
      List<Rejection> all = new ArrayList<Rejection>(rejected);
      all.addAll(refused);
      for (Rejection r : all) {
        db.execute(
            "INSERT INTO rejections (batch, user_id, item, reason, created_at) VALUES (?, ?, ?, ?, ?)",
            batch, userId, dumpItem(r.item), r.reason, now);
      }
      db.commit();
    } catch (RuntimeException e) {
      db.rollback();
      throw e;
    }
    for (long key : indexRemoves) {
      index.remove(key);
    }
    for (Object[] add : indexAdds) {
      index.add((Long) add[0], (float[]) add[1]);
    }
    for (Object[] change : keyChanges) {
      if ((Boolean) change[2]) {
        keysOf((String) change[0]).add((Long) change[1]);
      } else {
        keysOf((String) change[0]).remove((Long) change[1]);
      }
    }
    return new BatchEvents(events, batch, refused);
  }

  @SuppressWarnings("unchecked")
  private static Map<String, Object> jsonMap(String json) {
    try {
      return (Map<String, Object>) StrictJson.rawDecode(json, 0);
    } catch (StrictJson.Invalid e) {
      throw new StoreException("corrupt metadata JSON: " + e.getMessage());
    }
  }

  @SuppressWarnings("unchecked")
  private static List<String> jsonStrings(String json) {
    try {
      return (List<String>) StrictJson.rawDecode(json, 0);
    } catch (StrictJson.Invalid e) {
      throw new StoreException("corrupt JSON list: " + e.getMessage());
    }
  }

  private void history(
      String memoryId, String userId, String event, String oldText, String newText, String now, long batch,
      String actor) {
    db.execute(
        "INSERT INTO history (memory_id, user_id, event, old_text, new_text, created_at, batch, actor)"
            + " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        memoryId, userId, event, oldText, newText, now, batch, actor);
  }

  /** Replaces a memory's text and vector; {@link UnknownMemoryException} if there is no such memory. */
  public synchronized MemoryEvent update(
      String memoryId, String text, float[] vector, String timestamp, Map<String, ?> metadata, String actor) {
    MemoryRecord record = get(memoryId);
    if (record == null) {
      throw new UnknownMemoryException("no memory with id " + PyRepr.repr(memoryId));
    }
    if (text == null || PyStr.strip(text).isEmpty()) {
      throw new StoreException("update needs a non-empty text");
    }
    List<Object[]> prepared = new ArrayList<Object[]>();
    prepared.add(new Object[] {new ResolvedOp("UPDATE", memoryId, text, record.text), normalised(vector, "update")});
    checkOpen();
    return writeBatch(record.userId, prepared, null, null, timestamp, new ArrayList<String>(),
        new ArrayList<String>(), metadataJson(metadata), new ArrayList<Rejection>(), actor, true).events.get(0);
  }

  /** Deletes one memory (the history keeps it); {@link UnknownMemoryException} if there is no such memory. */
  public synchronized MemoryEvent delete(String memoryId, String actor) {
    MemoryRecord record = get(memoryId);
    if (record == null) {
      throw new UnknownMemoryException("no memory with id " + PyRepr.repr(memoryId));
    }
    List<Object[]> prepared = new ArrayList<Object[]>();
    prepared.add(new Object[] {new ResolvedOp("DELETE", memoryId, record.text, record.text), null});
    checkOpen();
    return writeBatch(record.userId, prepared, null, null, null, new ArrayList<String>(),
        new ArrayList<String>(), "{}", new ArrayList<Rejection>(), actor, true).events.get(0);
  }

  /** Deletes every memory of a user (optionally only those of an agent/run) in one transaction. */
  public synchronized List<MemoryEvent> deleteAll(String userId, String agentId, String runId, String actor) {
    List<MemoryRecord> records = getAll(userId, agentId, runId, null);
    if (records.isEmpty()) {
      return new ArrayList<MemoryEvent>();
    }
    List<Object[]> prepared = new ArrayList<Object[]>();
    for (MemoryRecord r : records) {
      prepared.add(new Object[] {new ResolvedOp("DELETE", r.id, r.text, r.text), null});
    }
    checkOpen();
    return new ArrayList<MemoryEvent>(writeBatch(userId, prepared, null, null, null, new ArrayList<String>(),
        new ArrayList<String>(), "{}", new ArrayList<Rejection>(), actor, true).events);
  }

  /** Erases every memory, the history and the rejections, in one transaction. */
  public synchronized void reset() {
    checkOpen();
    db.begin();
    try {
      long batch = batchSeq() + 1;
      db.execute("DROP TRIGGER history_no_delete");
      db.execute("DELETE FROM history");
      db.execute("DELETE FROM memories");
      db.execute("DELETE FROM rejections");
      db.execute("UPDATE meta SET value = ? WHERE key = 'batch_seq'", String.valueOf(batch));
      db.execute(SCHEMA[6].replace(" IF NOT EXISTS", ""));
      db.commit();
    } catch (RuntimeException e) {
      db.rollback();
      throw e;
    }
    index.clear();
    userKeys.clear();
  }

  // ------------------------------------------------------------------------------------------ reading

  /** The memory with this id, or null. */
  public synchronized MemoryRecord get(String memoryId) {
    checkOpen();
    List<Object[]> rows = db.query("SELECT " + RECORD_COLUMNS + " FROM memories WHERE id = ?", memoryId);
    return rows.isEmpty() ? null : record(rows.get(0), 0);
  }

  private static String scopeSql(String agentId, String runId, List<Object> args, String userId) {
    StringBuilder sql = new StringBuilder("user_id = ?");
    args.add(userId);
    if (agentId != null) {
      sql.append(" AND agent_id = ?");
      args.add(agentId);
    }
    if (runId != null) {
      sql.append(" AND run_id = ?");
      args.add(runId);
    }
    return sql.toString();
  }

  /** A user's memories (optionally of one agent/run), oldest first; {@code limit} may be null. */
  public synchronized List<MemoryRecord> getAll(String userId, String agentId, String runId, Integer limit) {
    checkOpen();
    List<Object> args = new ArrayList<Object>();
    String sql = "SELECT " + RECORD_COLUMNS + " FROM memories WHERE " + scopeSql(agentId, runId, args, userId)
        + " ORDER BY key" + (limit != null ? " LIMIT " + limit.intValue() : "");
    List<MemoryRecord> out = new ArrayList<MemoryRecord>();
    for (Object[] row : db.query(sql, args.toArray())) {
      out.add(record(row, 0));
    }
    return out;
  }

  /** Number of memories of one user (null: all users). */
  public synchronized long count(String userId) {
    checkOpen();
    List<Object[]> rows = userId == null
        ? db.query("SELECT COUNT(*) FROM memories")
        : db.query("SELECT COUNT(*) FROM memories WHERE user_id = ?", userId);
    return (Long) rows.get(0)[0];
  }

  /** Every event of a memory, oldest first (empty for an id never seen). */
  public synchronized List<HistoryEntry> history(String memoryId) {
    checkOpen();
    List<HistoryEntry> out = new ArrayList<HistoryEntry>();
    for (Object[] row : db.query(
        "SELECT id, memory_id, user_id, event, old_text, new_text, created_at, batch, actor FROM history"
            + " WHERE memory_id = ? ORDER BY id", memoryId)) {
      out.add(new HistoryEntry(row));
    }
    return out;
  }

  /** Recorded refused operations (of one user, or all when null), oldest first. */
  public synchronized List<RejectionEntry> rejections(String userId) {
    checkOpen();
    String sql = "SELECT batch, user_id, item, reason, created_at FROM rejections";
    List<Object[]> rows = userId == null
        ? db.query(sql + " ORDER BY id")
        : db.query(sql + " WHERE user_id = ? ORDER BY id", userId);
    List<RejectionEntry> out = new ArrayList<RejectionEntry>();
    for (Object[] row : rows) {
      Object item;
      try {
        item = StrictJson.rawDecode((String) row[2], 0);
      } catch (StrictJson.Invalid e) {
        item = row[2];
      }
      out.add(new RejectionEntry((Long) row[0], (String) row[1], item, (String) row[3], (String) row[4]));
    }
    return out;
  }

  /** The stored (normalised) embedding of a memory, or null. */
  public synchronized float[] vector(String memoryId) {
    checkOpen();
    List<Object[]> rows = db.query("SELECT vector FROM memories WHERE id = ?", memoryId);
    return rows.isEmpty() ? null : fromBlob((byte[]) rows.get(0)[0]);
  }

  /** Number of committed batches so far. */
  public synchronized long batchSequence() {
    checkOpen();
    return batchSeq();
  }

  /**
   * The {@code k} memories of {@code userId} (and agent/run when given) most similar to {@code vector},
   * best first; never another user's memory; fewer than k when the user has fewer memories.
   */
  public synchronized List<SearchHit> search(String userId, float[] vector, int k, String agentId, String runId) {
    float[] query = normalised(vector, "search");
    List<SearchHit> out = new ArrayList<SearchHit>();
    if (k <= 0) {
      return out;
    }
    checkOpen();
    Set<Long> allowed;
    if (agentId == null && runId == null) {
      Set<Long> keys = userKeys.get(userId);
      if (keys == null || keys.isEmpty()) {
        return out;
      }
      allowed = keys.size() == index.size() ? null : keys;
      k = Math.min(k, keys.size());
    } else {
      List<Object> args = new ArrayList<Object>();
      allowed = new HashSet<Long>();
      for (Object[] row : db.query("SELECT key FROM memories WHERE " + scopeSql(agentId, runId, args, userId),
          args.toArray())) {
        allowed.add((Long) row[0]);
      }
      if (allowed.isEmpty()) {
        return out;
      }
      k = Math.min(k, allowed.size());
    }
    List<VectorIndex.Hit> hits = index.search(query, k, allowed);
    if (hits.isEmpty()) {
      return out;
    }
    StringBuilder marks = new StringBuilder();
    Object[] keys = new Object[hits.size()];
    for (int i = 0; i < hits.size(); i++) {
      marks.append(i == 0 ? "?" : ",?");
      keys[i] = hits.get(i).key;
    }
    Map<Long, MemoryRecord> byKey = new HashMap<Long, MemoryRecord>();
    for (Object[] row : db.query("SELECT key, " + RECORD_COLUMNS + " FROM memories WHERE key IN (" + marks + ")", keys)) {
      byKey.put((Long) row[0], record(row, 1));
    }
    for (VectorIndex.Hit hit : hits) {
      MemoryRecord r = byKey.get(hit.key);
      if (r != null && r.userId.equals(userId)) {
        out.add(new SearchHit(r, hit.score));
      }
    }
    return out;
  }

  @Override
  public synchronized void close() {
    if (!closed) {
      closed = true;
      db.close();
    }
  }
}
