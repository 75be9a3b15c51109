package ai.memlora;

import com.google.gson.annotations.SerializedName;
import java.util.List;
import java.util.Map;

/**
 * Typed Gson view of a VERIFIED {@code bundle.json} (see {@link BundleManifest#load}); field names are
 * the manifest's keys. Kept by R8 through {@code consumer-rules.pro}.
 */
public final class BundleJson {
  @SerializedName("format_version")
  public int formatVersion;

  @SerializedName("created_by")
  public String createdBy;

  public Base base;
  public Map<String, ExpertJson> experts;
  public EmbedderJson embedder;
  public Map<String, FileRecord> files;
  public Map<String, Object> toolchain;

  /** {@code base}. */
  public static final class Base {
    public String architecture;

    @SerializedName("model_type")
    public String modelType;

    public String precision;
    public String dir;

    @SerializedName("lora_union")
    public Map<String, Integer> loraUnion;
  }

  /** {@code experts.<stage>}. */
  public static final class ExpertJson {
    public String stage;
    public String mode;
    public String file;

    @SerializedName("model_dir")
    public String modelDir;

    @SerializedName("target_modules")
    public List<String> targetModules;

    public Integer rank;
    public Double alpha;

    @SerializedName("prompt_set")
    public String promptSet;

    public Generation generation;
  }

  /** {@code experts.<stage>.generation}. */
  public static final class Generation {
    @SerializedName("max_new_tokens")
    public Integer maxNewTokens;
  }

  /** {@code embedder}. */
  public static final class EmbedderJson {
    public String file;

    @SerializedName("tokenizer_dir")
    public String tokenizerDir;

    public int dim;
    public boolean int8;

    @SerializedName("with_tokenizer_file")
    public String withTokenizerFile;
  }

  /** {@code files.<relpath>}. */
  public static final class FileRecord {
    public long size;
    public String sha256;
  }
}
