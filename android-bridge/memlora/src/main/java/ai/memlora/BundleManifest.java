package ai.memlora;

import com.google.gson.Gson;
import java.io.ByteArrayOutputStream;
import java.io.File;
import java.io.FileInputStream;
import java.io.IOException;
import java.io.InputStream;
import java.nio.charset.CharacterCodingException;
import java.nio.charset.CodingErrorAction;
import java.nio.charset.StandardCharsets;
import java.security.MessageDigest;
import java.security.NoSuchAlgorithmException;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.Collections;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

/**
 * Reads and verifies {@code BUNDLE/bundle.json}, a line-for-line mirror of Python's {@code
 * memlora.runtime.bundle.load_bundle}: known format version, required fields of the right types,
 * every path relative and inside the bundle (no {@code ..}, no absolute path, no symlink leading out),
 * every listed file present with the recorded size and sha256. Anything wrong throws {@link
 * BundleException} with the same message Python gives. Nothing is loaded from an unverified bundle.
 */
public final class BundleManifest {
  public static final String MANIFEST = "bundle.json";
  public static final List<Long> SUPPORTED_FORMAT_VERSIONS = Collections.singletonList(1L);
  public static final List<String> PRECISIONS = Arrays.asList("fp32", "int4");
  public static final List<String> EXPERT_MODES = Arrays.asList("externalized", "merged");

  /** One expert, with paths resolved inside the bundle. */
  public static final class Expert {
    public final String stage;
    /** "externalized" (an .onnx_adapter on the base graph) or "merged" (its own model dir). */
    public final String mode;
    /** The .onnx_adapter (externalized experts), else null. */
    public final File adapterFile;
    /** The ONNX Runtime GenAI model dir serving this stage. */
    public final File modelDir;
    public final List<String> targetModules;
    public final long rank;
    public final double alpha;
    public final String promptSet;
    /** {@code generation.max_new_tokens} as written (a number, or null). */
    public final Object maxNewTokens;

    Expert(String stage, String mode, File adapterFile, File modelDir, List<String> targetModules, long rank,
        double alpha, String promptSet, Object maxNewTokens) {
      this.stage = stage;
      this.mode = mode;
      this.adapterFile = adapterFile;
      this.modelDir = modelDir;
      this.targetModules = targetModules;
      this.rank = rank;
      this.alpha = alpha;
      this.promptSet = promptSet;
      this.maxNewTokens = maxNewTokens;
    }
  }

  /** The exported sentence embedder. */
  public static final class Embedder {
    public final File file;
    public final File tokenizerDir;
    public final long dim;
    public final boolean int8;
    /** Strings-in, vector-out model (tokenizer inside the graph), or null. */
    public final File withTokenizerFile;

    Embedder(File file, File tokenizerDir, long dim, boolean int8, File withTokenizerFile) {
      this.file = file;
      this.tokenizerDir = tokenizerDir;
      this.dim = dim;
      this.int8 = int8;
      this.withTokenizerFile = withTokenizerFile;
    }
  }

  public final File root;
  public final long formatVersion;
  public final String architecture;
  public final String modelType;
  public final String precision;
  public final File baseDir;
  public final Map<String, Long> loraUnion;
  public final Map<String, Expert> experts;
  /** Null when the bundle has no embedder. */
  public final Embedder embedder;
  /** Files in the bundle directory that the manifest does not list (never loaded). */
  public final List<String> unlisted;
  /** The verified manifest as typed Gson models (created_by, toolchain, ...); null if a loose field does not fit. */
  public final BundleJson json;
  /** The manifest's {@code "chat"} object (the chat template as a form, read by {@link ChatForm}); null when absent. */
  public final Map<String, Object> chat;

  private BundleManifest(File root, long formatVersion, String architecture, String modelType, String precision,
      File baseDir, Map<String, Long> loraUnion, Map<String, Expert> experts, Embedder embedder,
      List<String> unlisted, BundleJson json, Map<String, Object> chat) {
    this.root = root;
    this.formatVersion = formatVersion;
    this.architecture = architecture;
    this.modelType = modelType;
    this.precision = precision;
    this.baseDir = baseDir;
    this.loraUnion = Collections.unmodifiableMap(loraUnion);
    this.experts = Collections.unmodifiableMap(experts);
    this.embedder = embedder;
    this.unlisted = Collections.unmodifiableList(unlisted);
    this.json = json;
    this.chat = chat;
  }

  /** The model dir serving {@code stage} (the base for null, absent stages and externalized experts). */
  public File modelDirFor(String stage) {
    Expert e = stage == null ? null : experts.get(stage);
    return e != null && e.modelDir != null ? e.modelDir : baseDir;
  }

  /** The .onnx_adapter to activate for {@code stage}, or null (base model or merged expert). */
  public File adapterFor(String stage) {
    Expert e = stage == null ? null : experts.get(stage);
    return e != null ? e.adapterFile : null;
  }

  // --------------------------------------------------------------------------------------------- checks

  private static String manifestPath(File root) {
    return root.getPath() + "/" + MANIFEST;
  }

  private static boolean isPyInt(Object v) {
    return JsonValues.isInt(v) || v instanceof Boolean;
  }

  private static long pyIntValue(Object v) {
    if (v instanceof Boolean) {
      return ((Boolean) v) ? 1 : 0;
    }
    return ((Number) v).longValue();
  }

  /** Resolves a manifest path inside {@code root}; refuses absolute paths, {@code ..} and symlinks leading out. */
  static File safePath(File root, Object rel, String what) {
    String where = manifestPath(root);
    if (!(rel instanceof String) || ((String) rel).isEmpty()) {
      throw new BundleException(where + ": " + what + " must be a non-empty relative path, got " + PyRepr.repr(rel));
    }
    String r = (String) rel;
    if (r.startsWith("/") || r.startsWith("\\") || (r.length() > 1 && r.charAt(1) == ':')) {
      throw new BundleException(
          where + ": " + what + " " + PyRepr.repr(r) + " is an absolute path; bundle paths must be relative");
    }
    List<String> parts = new ArrayList<String>();
    for (String p : r.split("/")) {
      if (!p.isEmpty() && !p.equals(".")) {
        parts.add(p);
      }
    }
    if (parts.contains("..") || r.indexOf('\\') >= 0) {
      throw new BundleException(where + ": " + what + " " + PyRepr.repr(r)
          + " points outside the bundle ('..' or '\\' is not allowed)");
    }
    File path = root;
    for (String p : parts) {
      path = new File(path, p);
    }
    try {
      String rootCanon = root.getCanonicalPath();
      String canon = path.getCanonicalPath();
      if (!(canon.equals(rootCanon) || canon.startsWith(rootCanon.endsWith("/") ? rootCanon : rootCanon + "/"))) {
        throw new BundleException(where + ": " + what + " " + PyRepr.repr(r)
            + " resolves outside the bundle (a symlink leading out?)");
      }
    } catch (IOException e) {
      throw new BundleException(where + ": " + what + " " + PyRepr.repr(r) + " cannot be resolved: " + e.getMessage());
    }
    return path;
  }

  private static Object require(Object mapping, String key, Class<?> kind, String where) {
    if (!(mapping instanceof Map) || !((Map<?, ?>) mapping).containsKey(key)) {
      throw new BundleException(where + ": missing required field " + PyRepr.repr(key));
    }
    Object value = ((Map<?, ?>) mapping).get(key);
    boolean ok = kind == Long.class ? isPyInt(value) : kind.isInstance(value);
    if (!ok) {
      throw new BundleException(
          where + ": field " + PyRepr.repr(key) + " has the wrong type (" + PyRepr.typeName(value) + ")");
    }
    return value;
  }

  /** Python's {@code _optional}: the value if present and not null, type-checked (a bool is never an int); else null. */
  private static Object optional(Object mapping, String key, Class<?> kind, String where) {
    Object value = get(mapping, key);
    if (value == null) {
      return null;
    }
    boolean ok;
    if (kind == Long.class) {
      ok = JsonValues.isInt(value);
    } else if (kind == Number.class) {
      ok = value instanceof Number;
    } else {
      ok = kind.isInstance(value);
    }
    if (!ok) {
      throw new BundleException(
          where + ": field " + PyRepr.repr(key) + " has the wrong type (" + PyRepr.typeName(value) + ")");
    }
    return value;
  }

  /** {@code read_manifest}: the parsed manifest (a JSON object of a supported format version). */
  static Map<String, Object> readManifest(File root) {
    File path = new File(root, MANIFEST);
    if (!root.isDirectory()) {
      throw new BundleException(root.getPath() + ": bundle directory not found");
    }
    if (!path.isFile()) {
      throw new BundleException(
          root.getPath() + ": no " + MANIFEST + " (not a memlora bundle, or an export that did not finish)");
    }
    String where = manifestPath(root);
    Object manifest;
    try {
      String text = StandardCharsets.UTF_8.newDecoder()
          .onMalformedInput(CodingErrorAction.REPORT)
          .onUnmappableCharacter(CodingErrorAction.REPORT)
          .decode(java.nio.ByteBuffer.wrap(readAll(path)))
          .toString();
      manifest = StrictJson.loads(text);
    } catch (CharacterCodingException e) {
      throw new BundleException(where + ": not valid JSON (not UTF-8 text)");
    } catch (StrictJson.Invalid e) {
      throw new BundleException(where + ": not valid JSON (" + e.getMessage() + ")");
    } catch (IOException e) {
      throw new BundleException(where + ": cannot be read: " + e.getMessage());
    }
    if (!(manifest instanceof Map)) {
      throw new BundleException(where + ": the manifest must be a JSON object");
    }
    @SuppressWarnings("unchecked")
    Map<String, Object> m = (Map<String, Object>) manifest;
    Object version = m.get("format_version");
    boolean supported = false;
    if (isPyInt(version) || version instanceof Double) {
      double v = version instanceof Double ? (Double) version : pyIntValue(version);
      for (long s : SUPPORTED_FORMAT_VERSIONS) {
        supported |= v == s;
      }
    }
    if (!supported) {
      throw new BundleException(where + ": unknown bundle format_version " + PyRepr.repr(version)
          + " (this memlora reads " + SUPPORTED_FORMAT_VERSIONS + "); re-export the bundle with this version of"
          + " memlora-export or upgrade memlora");
    }
    return m;
  }

  static byte[] readAll(File f) throws IOException {
    return readAll(new FileInputStream(f));
  }

  /** The rest of {@code in}, which is then closed. */
  static byte[] readAll(InputStream in) throws IOException {
    try {
      ByteArrayOutputStream out = new ByteArrayOutputStream();
      forEachChunk(in, (buf, n) -> out.write(buf, 0, n));
      return out.toByteArray();
    } finally {
      in.close();
    }
  }

  /** Receives a stream chunk by chunk: {@code buf[0..n)}. */
  interface ChunkSink {
    void accept(byte[] buf, int n) throws IOException;
  }

  /** Reads the rest of {@code in} (not closed) in chunks of up to 1 MiB. */
  static void forEachChunk(InputStream in, ChunkSink sink) throws IOException {
    byte[] buf = new byte[1 << 20];
    int n;
    while ((n = in.read(buf)) > 0) {
      sink.accept(buf, n);
    }
  }

  /** Beside a bundle dir {@code X}: {@code X.verified}, what {@link #open} checks instead of hashing every file. */
  public static File stampFile(File root) {
    File abs = root.getAbsoluteFile();
    return new File(abs.getParentFile(), abs.getName() + ".verified");
  }

  /**
   * The stamp of a bundle as it is now: the sha256 of its {@code bundle.json}, then one line per listed file with its
   * size and modification time (stat calls only; null when a listed file is missing).
   */
  @SuppressWarnings("unchecked")
  static String currentStamp(File root) {
    File manifestFile = new File(root, MANIFEST);
    StringBuilder out = new StringBuilder();
    try {
      out.append("manifest ").append(sha256File(manifestFile)).append('\n');
    } catch (IOException e) {
      return null;
    }
    Object files = readManifest(root).get("files");
    if (!(files instanceof Map)) {
      return null;
    }
    for (String rel : ((Map<String, Object>) files).keySet()) {
      File f = safePath(root, rel, "file");
      if (!f.isFile()) {
        return null;
      }
      out.append(rel).append('\t').append(f.length()).append('\t').append(f.lastModified()).append('\n');
    }
    return out.toString();
  }

  /**
   * Records that {@code root} was verified in full (sizes + sha256) as it is now; {@link #open} then skips the hashing
   * while every listed file keeps its size and modification time. Best effort: an unwritable parent only costs a
   * full check at the next open.
   */
  public static void writeStamp(File root) {
    String stamp = currentStamp(root);
    if (stamp == null) {
      return;
    }
    File file = stampFile(root);
    File tmp = new File(file.getPath() + ".tmp");
    try {
      java.io.OutputStream out = new java.io.FileOutputStream(tmp);
      try {
        out.write(stamp.getBytes(StandardCharsets.UTF_8));
      } finally {
        out.close();
      }
      if (!tmp.renameTo(file)) {
        tmp.delete();
      }
    } catch (IOException e) {
      tmp.delete();
    }
  }

  /**
   * {@link #load} for the app: the full check (sizes + sha256) the first time, then, while the stamp beside the bundle
   * ({@link #stampFile}) matches the manifest's digest and every listed file's size and modification time, only the
   * path and size checks. A changed, added or replaced file fails the stamp and gets the full check again.
   */
  public static BundleManifest open(File root) {
    File stamp = stampFile(root);
    String current = currentStamp(root);
    if (current != null && stamp.isFile()) {
      try {
        if (current.equals(new String(readAll(stamp), StandardCharsets.UTF_8))) {
          return load(root, false);
        }
      } catch (IOException e) {
        // unreadable stamp: verify in full below
      }
    }
    BundleManifest bundle = load(root, true);
    writeStamp(root);
    return bundle;
  }

  /** Hex sha256 of a file, streamed. */
  public static String sha256File(File f) throws IOException {
    MessageDigest digest;
    try {
      digest = MessageDigest.getInstance("SHA-256");
    } catch (NoSuchAlgorithmException e) {
      throw new IllegalStateException("SHA-256 unavailable", e);
    }
    InputStream in = new FileInputStream(f);
    try {
      forEachChunk(in, (buf, n) -> digest.update(buf, 0, n));
    } finally {
      in.close();
    }
    StringBuilder out = new StringBuilder();
    for (byte b : digest.digest()) {
      out.append(String.format("%02x", b & 0xff));
    }
    return out.toString();
  }

  /** Checks every listed file's presence, size and (with {@code hashes}) sha256. */
  static void verifyFiles(File root, Map<String, Object> files, boolean hashes) {
    for (Map.Entry<String, Object> e : files.entrySet()) {
      String rel = e.getKey();
      File path = safePath(root, rel, "file");
      if (!path.isFile()) {
        throw new BundleException(root.getPath() + ": listed file " + PyRepr.repr(rel) + " is missing (or not a regular file)");
      }
      Object record = e.getValue();
      Map<?, ?> rec = record instanceof Map ? (Map<?, ?>) record : null;
      if (rec == null || !isPyInt(rec.get("size")) || !(rec.get("sha256") instanceof String)) {
        throw new BundleException(manifestPath(root) + ": the record of " + PyRepr.repr(rel)
            + " needs an integer size and a sha256 string");
      }
      long size = path.length();
      if (size != pyIntValue(rec.get("size"))) {
        throw new BundleException(root.getPath() + ": " + PyRepr.repr(rel) + " is " + size + " bytes, the manifest says "
            + PyRepr.str(rec.get("size")) + ": the file was changed or truncated");
      }
      if (hashes) {
        String sha;
        try {
          sha = sha256File(path);
        } catch (IOException ex) {
          throw new BundleException(root.getPath() + ": " + PyRepr.repr(rel) + " cannot be read: " + ex.getMessage());
        }
        if (!sha.equals(rec.get("sha256"))) {
          throw new BundleException(root.getPath() + ": " + PyRepr.repr(rel)
              + " fails its sha256 check: the file was changed or corrupted; re-export the bundle");
        }
      }
    }
  }

  private static File listedDir(File root, Object rel, Map<String, Object> files, String what) {
    File path = safePath(root, rel, what);
    String prefix = PyStr.rstrip((String) rel, "/") + "/";
    for (String name : files.keySet()) {
      if (name.startsWith(prefix)) {
        return path;
      }
    }
    throw new BundleException(manifestPath(root) + ": " + what + " " + PyRepr.repr(rel) + " holds no listed files");
  }

  private static File listedFile(File root, Object rel, Map<String, Object> files, String what) {
    File path = safePath(root, rel, what);
    if (!files.containsKey(rel)) {
      throw new BundleException(
          manifestPath(root) + ": " + what + " " + PyRepr.repr(rel) + " is not in the checksummed file list");
    }
    return path;
  }

  private static Object get(Object map, String key) {
    return map instanceof Map ? ((Map<?, ?>) map).get(key) : null;
  }

  /** The prompt set every expert was trained with, or null when they differ (or there is no expert). */
  public String sharedPromptSet() {
    String shared = null;
    for (Expert e : experts.values()) {
      if (shared != null && !shared.equals(e.promptSet)) {
        return null;
      }
      shared = e.promptSet;
    }
    return shared;
  }

  /**
   * {@code load_bundle(path, verify)}: reads {@code root/bundle.json}, checks paths (always) and sizes +
   * sha256 ({@code verify}), returns the resolved bundle or throws {@link BundleException}.
   */
  @SuppressWarnings("unchecked")
  public static BundleManifest load(File root, boolean verify) {
    Map<String, Object> manifest = readManifest(root);
    String where = manifestPath(root);
    Map<String, Object> files = (Map<String, Object>) require(manifest, "files", Map.class, where);
    for (String rel : files.keySet()) {
      safePath(root, rel, "file");
    }
    verifyFiles(root, files, verify);

    Map<String, Object> base = (Map<String, Object>) require(manifest, "base", Map.class, where);
    String precision = (String) require(base, "precision", String.class, where + " base");
    if (!PRECISIONS.contains(precision)) {
      throw new BundleException(where + ": base precision " + PyRepr.repr(precision) + " is not one of ('fp32', 'int4')");
    }
    File baseDir = listedDir(root, require(base, "dir", String.class, where + " base"), files, "base dir");
    if (!new File(baseDir, "genai_config.json").isFile()) {
      throw new BundleException(root.getPath() + ": the base model dir has no genai_config.json");
    }

    Map<String, Expert> experts = new LinkedHashMap<String, Expert>();
    Map<String, Object> expertsJson = (Map<String, Object>) require(manifest, "experts", Map.class, where);
    for (Map.Entry<String, Object> e : expertsJson.entrySet()) {
      String stage = e.getKey();
      Object entry = e.getValue();
      String ewhere = where + " expert " + PyRepr.repr(stage);
      if (!(entry instanceof Map)) {
        throw new BundleException(ewhere + ": must be a JSON object, got " + PyRepr.typeName(entry));
      }
      String mode = (String) require(entry, "mode", String.class, ewhere);
      if (!EXPERT_MODES.contains(mode)) {
        throw new BundleException(ewhere + ": mode " + PyRepr.repr(mode) + " is not one of ('externalized', 'merged')");
      }
      File adapterFile = null;
      File modelDir;
      if (mode.equals("externalized")) {
        adapterFile = listedFile(root, require(entry, "file", String.class, ewhere), files,
            "expert " + PyRepr.repr(stage) + " file");
        modelDir = baseDir;
      } else {
        modelDir = listedDir(root, require(entry, "model_dir", String.class, ewhere), files,
            "expert " + PyRepr.repr(stage) + " model_dir");
      }
      Object generation = optional(entry, "generation", Map.class, ewhere);
      Object maxNewTokens = optional(generation, "max_new_tokens", Long.class, ewhere + " generation");
      List<String> targets = new ArrayList<String>();
      Object tm = optional(entry, "target_modules", List.class, ewhere);
      if (tm != null) {
        for (Object t : (List<?>) tm) {
          targets.add(PyRepr.str(t));
        }
      }
      Object rank = optional(entry, "rank", Long.class, ewhere);
      Object alpha = optional(entry, "alpha", Number.class, ewhere);
      Object promptSet = optional(entry, "prompt_set", String.class, ewhere);
      experts.put(stage, new Expert(stage, mode, adapterFile, modelDir, Collections.unmodifiableList(targets),
          rank == null ? 0 : pyIntValue(rank), alpha == null ? 0.0 : ((Number) alpha).doubleValue(),
          JsonValues.truthy(promptSet) ? PyRepr.str(promptSet) : "memlora", maxNewTokens));
    }

    Embedder embedder = null;
    Object emb = manifest.get("embedder");
    if (JsonValues.truthy(emb)) {
      require(manifest, "embedder", Map.class, where);
      String ewhere = where + " embedder";
      Object withTok = get(emb, "with_tokenizer_file");
      File file = listedFile(root, require(emb, "file", String.class, ewhere), files, "embedder file");
      File tokDir = listedDir(root, require(emb, "tokenizer_dir", String.class, ewhere), files, "embedder tokenizer_dir");
      long dim = pyIntValue(require(emb, "dim", Long.class, ewhere));
      Object int8 = emb instanceof Map && ((Map<?, ?>) emb).containsKey("int8") ? get(emb, "int8") : Boolean.FALSE;
      File withTokFile = JsonValues.truthy(withTok)
          ? listedFile(root, withTok, files, "embedder with_tokenizer_file") : null;
      embedder = new Embedder(file, tokDir, dim, JsonValues.truthy(int8), withTokFile);
    }

    List<String> unlisted = new ArrayList<String>();
    collectUnlisted(root, "", files, unlisted);
    Collections.sort(unlisted, MemoryStore.PY_STRING_ORDER);

    Map<String, Long> union = new LinkedHashMap<String, Long>();
    Object lu = optional(base, "lora_union", Map.class, where + " base");
    if (lu != null) {
      for (Map.Entry<?, ?> u : ((Map<?, ?>) lu).entrySet()) {
        if (!JsonValues.isInt(u.getValue())) {
          throw new BundleException(where + " base: lora_union rank of " + PyRepr.repr(String.valueOf(u.getKey()))
              + " must be an integer, got " + PyRepr.typeName(u.getValue()));
        }
        union.put(String.valueOf(u.getKey()), pyIntValue(u.getValue()));
      }
    }
    BundleJson typed;
    try {
      typed = new Gson().fromJson(PyJson.dumpsDefault(manifest), BundleJson.class);
    } catch (RuntimeException e) {
      typed = null; // verified, but an optional field has a type the typed view does not model
    }
    Object version = manifest.get("format_version");
    long formatVersion = version instanceof Double ? (long) (double) (Double) version : pyIntValue(version);
    return new BundleManifest(root, formatVersion,
        base.containsKey("architecture") ? PyRepr.str(base.get("architecture")) : "",
        base.containsKey("model_type") ? PyRepr.str(base.get("model_type")) : "",
        precision, baseDir, union, experts, embedder, unlisted, typed,
        manifest.get("chat") instanceof Map ? (Map<String, Object>) manifest.get("chat") : null);
  }

  private static void collectUnlisted(File dir, String prefix, Map<String, Object> files, List<String> out) {
    File[] children = dir.listFiles();
    if (children == null) {
      return;
    }
    for (File child : children) {
      String rel = prefix + child.getName();
      boolean link = isSymlink(child);
      if (child.isDirectory()) {
        if (!link) {
          collectUnlisted(child, rel + "/", files, out);
        }
      } else if (child.isFile() && !files.containsKey(rel) && !rel.equals(MANIFEST)) {
        out.add(rel);
      }
    }
  }

  static boolean isSymlink(File f) {
    try {
      File parent = f.getParentFile().getCanonicalFile();
      return !f.getCanonicalFile().equals(new File(parent, f.getName()));
    } catch (IOException e) {
      return true;
    }
  }
}
