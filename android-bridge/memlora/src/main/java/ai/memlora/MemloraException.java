package ai.memlora;

/**
 * Bad input or a state the user must fix; the message says what and how. Mirrors Python's {@code
 * memlora.errors.MemloraError}: the bridge never lets malformed model output, unknown ids or a corrupt
 * bundle crash the app with anything else.
 */
public class MemloraException extends RuntimeException {
  private static final long serialVersionUID = 1L;

  public MemloraException(String message) {
    super(message);
  }

  public MemloraException(String message, Throwable cause) {
    super(message, cause);
  }
}
