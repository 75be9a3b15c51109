package ai.memlora;

/** A bundle is missing, corrupt, tampered with or of an unknown format version ({@code BundleError}). */
public class BundleException extends MemloraException {
  private static final long serialVersionUID = 1L;

  public BundleException(String message) {
    super(message);
  }

  public BundleException(String message, Throwable cause) {
    super(message, cause);
  }
}
