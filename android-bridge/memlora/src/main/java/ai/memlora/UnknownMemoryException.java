package ai.memlora;

/** A memory id that is not in the store ({@code UnknownMemoryError}). */
public class UnknownMemoryException extends StoreException {
  private static final long serialVersionUID = 1L;

  public UnknownMemoryException(String message) {
    super(message);
  }
}
