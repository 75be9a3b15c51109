package ai.memlora;

import java.sql.Connection;
import java.sql.DriverManager;
import java.sql.PreparedStatement;
import java.sql.ResultSet;
import java.sql.SQLException;
import java.sql.Statement;
import java.util.ArrayList;
import java.util.List;

/** {@link SqlDatabase} over JDBC (Xerial's sqlite-jdbc) for host tests: the same SQL the Android build runs. */
final class JdbcSqlDatabase implements SqlDatabase {
  private final Connection connection;

  private JdbcSqlDatabase(Connection connection) {
    this.connection = connection;
  }

  /** A database file, or ":memory:". */
  static JdbcSqlDatabase open(String path) {
    try {
      Connection c = DriverManager.getConnection("jdbc:sqlite:" + path);
      c.setAutoCommit(true);
      JdbcSqlDatabase db = new JdbcSqlDatabase(c);
      if (!":memory:".equals(path)) {
        db.query("PRAGMA journal_mode = WAL");
      }
      db.execute("PRAGMA synchronous = FULL");
      return db;
    } catch (SQLException e) {
      throw new MemloraException("SQLite: " + e.getMessage(), e);
    }
  }

  private PreparedStatement prepare(String sql, Object... args) throws SQLException {
    PreparedStatement st = connection.prepareStatement(sql);
    for (int k = 0; k < args.length; k++) {
      Object a = args[k];
      if (a == null) {
        st.setNull(k + 1, java.sql.Types.NULL);
      } else if (a instanceof byte[]) {
        st.setBytes(k + 1, (byte[]) a);
      } else if (a instanceof Long || a instanceof Integer) {
        st.setLong(k + 1, ((Number) a).longValue());
      } else if (a instanceof Double || a instanceof Float) {
        st.setDouble(k + 1, ((Number) a).doubleValue());
      } else {
        st.setString(k + 1, String.valueOf(a));
      }
    }
    return st;
  }

  @Override
  public void execute(String sql, Object... args) {
    try (PreparedStatement st = prepare(sql, args)) {
      st.execute();
    } catch (SQLException e) {
      throw new MemloraException("SQLite: " + e.getMessage(), e);
    }
  }

  @Override
  public long insert(String sql, Object... args) {
    execute(sql, args);
    return (Long) query("SELECT last_insert_rowid()").get(0)[0];
  }

  @Override
  public List<Object[]> query(String sql, Object... args) {
    List<Object[]> rows = new ArrayList<Object[]>();
    try (PreparedStatement st = prepare(sql, args);
        ResultSet rs = st.executeQuery()) {
      int n = rs.getMetaData().getColumnCount();
      while (rs.next()) {
        Object[] row = new Object[n];
        for (int k = 0; k < n; k++) {
          Object v = rs.getObject(k + 1);
          if (v instanceof Integer || v instanceof Short || v instanceof Byte) {
            v = ((Number) v).longValue();
          } else if (v instanceof Float) {
            v = ((Float) v).doubleValue();
          }
          row[k] = v;
        }
        rows.add(row);
      }
    } catch (SQLException e) {
      throw new MemloraException("SQLite: " + e.getMessage(), e);
    }
    return rows;
  }

  private void raw(String sql) {
    try (Statement st = connection.createStatement()) {
      st.execute(sql);
    } catch (SQLException e) {
      throw new MemloraException("SQLite: " + e.getMessage(), e);
    }
  }

  @Override
  public void begin() {
    raw("BEGIN IMMEDIATE");
  }

  @Override
  public void commit() {
    raw("COMMIT");
  }

  @Override
  public void rollback() {
    try (Statement st = connection.createStatement()) {
      st.execute("ROLLBACK");
    } catch (SQLException e) {
      // no transaction open: nothing to undo
    }
  }

  @Override
  public void close() {
    try {
      connection.close();
    } catch (SQLException e) {
      throw new MemloraException("SQLite: " + e.getMessage(), e);
    }
  }
}
