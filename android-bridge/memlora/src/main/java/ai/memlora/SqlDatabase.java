package ai.memlora;

import java.io.Closeable;
import java.util.List;

/**
 * The little SQLite surface {@link MemoryStore} needs, so one store runs on Android ({@link
 * AndroidSqlDatabase}, {@code android.database.sqlite}) and on a host JVM (a JDBC implementation in the
 * test tree). Arguments are bound positionally ({@code ?}); values are String, Long, Double, byte[] or
 * null. Implementations throw {@link MemloraException} on SQL errors.
 */
public interface SqlDatabase extends Closeable {
  /** Executes one statement that returns no rows. */
  void execute(String sql, Object... args);

  /** Executes an INSERT and returns the new row's rowid. */
  long insert(String sql, Object... args);

  /** Runs a query; each row is an array of column values (String, Long, Double, byte[] or null). */
  List<Object[]> query(String sql, Object... args);

  /** BEGIN IMMEDIATE (a write transaction). */
  void begin();

  void commit();

  void rollback();

  @Override
  void close();
}
