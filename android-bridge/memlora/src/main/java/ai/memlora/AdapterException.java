package ai.memlora;

/** An adapter that does not exist or does not fit ({@code AdapterError}). */
public class AdapterException extends MemloraException {
  private static final long serialVersionUID = 1L;

  public AdapterException(String message) {
    super(message);
  }
}
