package ai.memlora;

import android.database.Cursor;
import android.database.sqlite.SQLiteDatabase;
import java.io.File;
import java.util.ArrayList;
import java.util.List;

/** {@link SqlDatabase} over Android's {@link SQLiteDatabase} (WAL, synchronous=FULL, like the Python store). */
public final class AndroidSqlDatabase implements SqlDatabase {
  private final SQLiteDatabase db;

  private AndroidSqlDatabase(SQLiteDatabase db) {
    this.db = db;
  }

  /** Opens (or creates) {@code file} in WAL mode. */
  public static AndroidSqlDatabase open(File file) {
    SQLiteDatabase db = SQLiteDatabase.openOrCreateDatabase(file.getPath(), null);
    db.enableWriteAheadLogging();
    AndroidSqlDatabase out = new AndroidSqlDatabase(db);
    out.query("PRAGMA synchronous = FULL");
    return out;
  }

  @Override
  public void execute(String sql, Object... args) {
    try {
      if (args.length == 0) {
        db.execSQL(sql);
      } else {
        db.execSQL(sql, args);
      }
    } catch (RuntimeException e) {
      throw new MemloraException("SQLite: " + e.getMessage(), e);
    }
  }

  @Override
  public long insert(String sql, Object... args) {
    execute(sql, args);
    List<Object[]> rows = query("SELECT last_insert_rowid()");
    return (Long) rows.get(0)[0];
  }

  @Override
  public List<Object[]> query(String sql, Object... args) {
    String[] bound = new String[args.length];
    for (int k = 0; k < args.length; k++) {
      bound[k] = args[k] == null ? null : String.valueOf(args[k]);
    }
    List<Object[]> rows = new ArrayList<Object[]>();
    Cursor c = null;
    try {
      c = db.rawQuery(sql, bound);
      int n = c.getColumnCount();
      while (c.moveToNext()) {
        Object[] row = new Object[n];
        for (int k = 0; k < n; k++) {
          switch (c.getType(k)) {
            case Cursor.FIELD_TYPE_NULL:
              row[k] = null;
              break;
            case Cursor.FIELD_TYPE_INTEGER:
              row[k] = c.getLong(k);
              break;
            case Cursor.FIELD_TYPE_FLOAT:
              row[k] = c.getDouble(k);
              break;
            case Cursor.FIELD_TYPE_BLOB:
              row[k] = c.getBlob(k);
              break;
            default:
              row[k] = c.getString(k);
          }
        }
        rows.add(row);
      }
    } catch (RuntimeException e) {
      throw new MemloraException("SQLite: " + e.getMessage(), e);
    } finally {
      if (c != null) {
        c.close();
      }
    }
    return rows;
  }

  @Override
  public void begin() {
    db.beginTransaction();
  }

  @Override
  public void commit() {
    db.setTransactionSuccessful();
    db.endTransaction();
  }

  @Override
  public void rollback() {
    if (db.inTransaction()) {
      db.endTransaction();
    }
  }

  @Override
  public void close() {
    db.close();
  }
}
