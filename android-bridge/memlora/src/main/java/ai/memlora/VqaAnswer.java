package ai.memlora;

/** The VQA expert's answer. */
public final class VqaAnswer {
  /** The (one-word) answer. */
  public final String answer;
  /** The model's short reasoning, possibly empty. */
  public final String reason;

  public VqaAnswer(String answer, String reason) {
    this.answer = answer;
    this.reason = reason;
  }
}
