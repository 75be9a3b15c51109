package ai.memlora;

import ai.onnxruntime.OnnxTensor;
import ai.onnxruntime.OnnxValue;
import ai.onnxruntime.OrtEnvironment;
import ai.onnxruntime.OrtException;
import ai.onnxruntime.OrtSession;
import ai.onnxruntime.extensions.OrtxPackage;
import java.io.File;
import java.nio.FloatBuffer;
import java.util.Collections;
import java.util.List;
import java.util.Set;

/**
 * The bundle's sentence embedder on ONNX Runtime: the tokenizer-in-graph model ({@code
 * embedder.with_tokenizer_file}: one string in, {@code sentence_embedding} out, pooling and
 * normalisation inside the graph), with onnxruntime-extensions' custom ops registered for its
 * BertTokenizer. The tokenizer op takes one string per call, so texts are embedded one at a time.
 */
public final class OrtEmbedder implements Embedder {
  /** Output name of the exported embedder. */
  public static final String OUTPUT = "sentence_embedding";

  private final OrtEnvironment env;
  private final OrtSession.SessionOptions options;
  private final OrtSession session;
  private final String inputName;
  private final String outputName;
  private final int dim;

  /**
   * @param model the strings-in, vector-out ONNX model
   * @param dim the vector size the manifest records
   * @param threads intra-op threads (0: ONNX Runtime's default)
   */
  public OrtEmbedder(File model, int dim, int threads) {
    if (!model.isFile()) {
      throw new MemloraException("embedder model not found: " + model);
    }
    this.dim = dim;
    try {
      env = OrtEnvironment.getEnvironment();
      env.setTelemetry(false); // on-device privacy: no usage telemetry
      options = new OrtSession.SessionOptions();
      options.registerCustomOpLibrary(OrtxPackage.getLibraryPath());
      if (threads > 0) {
        options.setIntraOpNumThreads(threads);
      }
      session = env.createSession(model.getPath(), options);
    } catch (OrtException e) {
      throw new MemloraException("cannot load the embedder " + model + ": " + e.getMessage(), e);
    }
    Set<String> inputs = session.getInputNames();
    if (inputs.size() != 1) {
      close();
      throw new MemloraException(model + " is not a tokenizer-in-graph embedder: inputs " + inputs
          + " (export it with the tokenizer: embedder.with_tokenizer_file)");
    }
    inputName = inputs.iterator().next();
    Set<String> outputs = session.getOutputNames();
    outputName = outputs.contains(OUTPUT) ? OUTPUT : outputs.iterator().next();
  }

  /** The embedder of a verified bundle; it must carry the tokenizer-in-graph model. */
  public static OrtEmbedder fromBundle(BundleManifest bundle, int threads) {
    if (bundle.embedder == null || bundle.embedder.withTokenizerFile == null) {
      throw new BundleException(bundle.root + ": the bundle has no tokenizer-in-graph embedder"
          + " (embedder.with_tokenizer_file); re-export it for Android");
    }
    return new OrtEmbedder(bundle.embedder.withTokenizerFile, (int) bundle.embedder.dim, threads);
  }

  @Override
  public int dim() {
    return dim;
  }

  @Override
  public float[][] encode(List<String> texts) {
    float[][] out = new float[texts.size()][];
    for (int i = 0; i < texts.size(); i++) {
      out[i] = encodeOne(texts.get(i));
    }
    return out;
  }

  private float[] encodeOne(String text) {
    OnnxTensor input = null;
    OrtSession.Result result = null;
    try {
      input = OnnxTensor.createTensor(env, new String[] {text}, new long[] {1});
      result = session.run(Collections.singletonMap(inputName, input));
      OnnxValue value = result.get(outputName).orElseThrow(() -> new MemloraException("embedder gave no " + outputName));
      FloatBuffer buffer = ((OnnxTensor) value).getFloatBuffer();
      if (buffer == null || buffer.remaining() != dim) {
        throw new MemloraException("embedder output has " + (buffer == null ? 0 : buffer.remaining())
            + " floats, the bundle says dim=" + dim);
      }
      float[] v = new float[dim];
      buffer.get(v);
      return l2Normalise(v);
    } catch (OrtException e) {
      throw new MemloraException("embedding failed: " + e.getMessage(), e);
    } finally {
      if (result != null) {
        result.close();
      }
      if (input != null) {
        input.close();
      }
    }
  }

  /** Row L2 normalisation (zero stays zero), as Python's {@code l2_normalise}. */
  static float[] l2Normalise(float[] v) {
    double sq = 0;
    for (float f : v) {
      sq += (double) f * f;
    }
    float norm = (float) Math.max(Math.sqrt(sq), 1e-12);
    float[] out = new float[v.length];
    for (int k = 0; k < v.length; k++) {
      out[k] = v[k] / norm;
    }
    return out;
  }

  @Override
  public void close() {
    try {
      if (session != null) {
        session.close();
      }
    } catch (OrtException e) {
      // closing twice or after a failed load: nothing left to release
    }
    if (options != null) {
      options.close();
    }
  }
}
