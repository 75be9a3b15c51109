// Compile-only stub (test tree, never shipped): signatures of the Android SDK public API.
package android.database.sqlite;

import android.database.Cursor;

public final class SQLiteDatabase implements java.io.Closeable {
  private SQLiteDatabase() {}

  public interface CursorFactory {}

  public static SQLiteDatabase openOrCreateDatabase(String path, CursorFactory factory) {
    throw new UnsupportedOperationException("compile-only stub");
  }

  public boolean enableWriteAheadLogging() {
    throw new UnsupportedOperationException("compile-only stub");
  }

  public void execSQL(String sql) {
    throw new UnsupportedOperationException("compile-only stub");
  }

  public void execSQL(String sql, Object[] bindArgs) {
    throw new UnsupportedOperationException("compile-only stub");
  }

  public Cursor rawQuery(String sql, String[] selectionArgs) {
    throw new UnsupportedOperationException("compile-only stub");
  }

  public void beginTransaction() {
    throw new UnsupportedOperationException("compile-only stub");
  }

  public void setTransactionSuccessful() {
    throw new UnsupportedOperationException("compile-only stub");
  }

  public void endTransaction() {
    throw new UnsupportedOperationException("compile-only stub");
  }

  public boolean inTransaction() {
    throw new UnsupportedOperationException("compile-only stub");
  }

  @Override
  public void close() {}
}
