package ai.memlora;

import java.io.File;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import org.junit.Test;

/**
 * Valid and tampered bundles (built by the Python manifest writer, then damaged): the Java verifier gives
 * the same verdict and the same message as {@code load_bundle}, and the same resolved bundle when valid.
 */
public class ManifestGoldenTest {
  static String rel(File root, File f) {
    if (f == null) {
      return null;
    }
    String r = root.getPath();
    String p = f.getPath();
    return p.equals(r) ? "." : p.substring(r.length() + 1);
  }

  static Map<String, Object> summary(BundleManifest b) {
    Map<String, Object> m = new LinkedHashMap<String, Object>();
    m.put("format_version", b.formatVersion);
    m.put("architecture", b.architecture);
    m.put("model_type", b.modelType);
    m.put("precision", b.precision);
    m.put("base_dir", rel(b.root, b.baseDir));
    m.put("lora_union", new LinkedHashMap<String, Object>(b.loraUnion));
    Map<String, Object> experts = new LinkedHashMap<String, Object>();
    for (BundleManifest.Expert e : b.experts.values()) {
      Map<String, Object> x = new LinkedHashMap<String, Object>();
      x.put("mode", e.mode);
      x.put("adapter_file", rel(b.root, e.adapterFile));
      x.put("model_dir", rel(b.root, e.modelDir));
      x.put("target_modules", new ArrayList<Object>(e.targetModules));
      x.put("rank", e.rank);
      x.put("alpha", e.alpha);
      x.put("prompt_set", e.promptSet);
      x.put("max_new_tokens", e.maxNewTokens);
      experts.put(e.stage, x);
    }
    m.put("experts", experts);
    if (b.embedder == null) {
      m.put("embedder", null);
    } else {
      Map<String, Object> x = new LinkedHashMap<String, Object>();
      x.put("file", rel(b.root, b.embedder.file));
      x.put("tokenizer_dir", rel(b.root, b.embedder.tokenizerDir));
      x.put("dim", b.embedder.dim);
      x.put("int8", b.embedder.int8);
      x.put("with_tokenizer_file", rel(b.root, b.embedder.withTokenizerFile));
      m.put("embedder", x);
    }
    m.put("unlisted", new ArrayList<Object>(b.unlisted));
    m.put("shared_prompt_set", b.sharedPromptSet());
    return m;
  }

  /** Python's JSON decoder error text is its own: for "not valid JSON" only the category is compared. */
  static String comparable(String message) {
    int k = message.indexOf("not valid JSON (");
    return k >= 0 ? message.substring(0, k + "not valid JSON".length()) : message;
  }

  @Test
  public void verdictsMatchPython() {
    Golden.Report report = new Golden.Report("manifest");
    List<Map<String, Object>> cases = Golden.cases("manifest.json");
    for (Map<String, Object> c : cases) {
      String id = (String) c.get("id");
      File root = new File(Golden.dir(), (String) c.get("bundle"));
      boolean verify = (Boolean) c.get("verify");
      try {
        BundleManifest b = BundleManifest.load(root, verify);
        if ("error".equals(c.get("verdict"))) {
          report.fail(id, "Python refused (" + c.get("message") + ") but Java accepted");
        } else {
          report.check(id, c.get("bundle_summary"), summary(b));
          if (b.json == null || b.json.base == null || !b.json.base.precision.equals(b.precision)) {
            report.fail(id, "typed Gson view missing or inconsistent");
          }
        }
      } catch (BundleException e) {
        if (!"error".equals(c.get("verdict"))) {
          report.fail(id, "Java refused a bundle Python accepts: " + e.getMessage());
        } else {
          String got = e.getMessage().replace(root.getPath(), "<ROOT>");
          report.check(id, comparable((String) c.get("message")), comparable(got));
        }
      }
    }
    report.assertAllPassed();
  }
}
