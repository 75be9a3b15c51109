package ai.memlora;

/** The memory store cannot be opened or used as asked ({@code StoreError}). */
public class StoreException extends MemloraException {
  private static final long serialVersionUID = 1L;

  public StoreException(String message) {
    super(message);
  }
}
