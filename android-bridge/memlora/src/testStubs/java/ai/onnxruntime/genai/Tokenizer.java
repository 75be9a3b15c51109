// Compile-only stub (test tree, never shipped): signatures mirror onnxruntime-genai 0.18 Java API; see testStubs/README.md.
package ai.onnxruntime.genai;

public class Tokenizer implements AutoCloseable {
  public Tokenizer(Model model) throws GenAIException {
    throw new UnsupportedOperationException("compile-only stub");
  }

  public Sequences encode(String string) throws GenAIException {
    throw new UnsupportedOperationException("compile-only stub");
  }

  public Sequences encodeBatch(String[] strings) throws GenAIException {
    throw new UnsupportedOperationException("compile-only stub");
  }

  public String decode(int[] sequence) throws GenAIException {
    throw new UnsupportedOperationException("compile-only stub");
  }

  public String[] decodeBatch(Sequences sequences) throws GenAIException {
    throw new UnsupportedOperationException("compile-only stub");
  }

  public int getBosTokenId() throws GenAIException {
    throw new UnsupportedOperationException("compile-only stub");
  }

  public int getPadTokenId() throws GenAIException {
    throw new UnsupportedOperationException("compile-only stub");
  }

  public int[] getEosTokenIds() throws GenAIException {
    throw new UnsupportedOperationException("compile-only stub");
  }

  public int toTokenId(String str) throws GenAIException {
    throw new UnsupportedOperationException("compile-only stub");
  }

  public String applyChatTemplate(
      String templateStr, String messages, String tools, boolean addGenerationPrompt)
      throws GenAIException {
    throw new UnsupportedOperationException("compile-only stub");
  }

  public void updateOptions(java.util.Map<String, String> options) throws GenAIException {
    throw new UnsupportedOperationException("compile-only stub");
  }

  public TokenizerStream createStream() throws GenAIException {
    throw new UnsupportedOperationException("compile-only stub");
  }

  @Override
  public void close() {}
}
