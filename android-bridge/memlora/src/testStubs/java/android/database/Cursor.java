// Compile-only stub (test tree, never shipped): signatures of the Android SDK public API.
package android.database;

import java.io.Closeable;

public interface Cursor extends Closeable {
  int FIELD_TYPE_NULL = 0;
  int FIELD_TYPE_INTEGER = 1;
  int FIELD_TYPE_FLOAT = 2;
  int FIELD_TYPE_STRING = 3;
  int FIELD_TYPE_BLOB = 4;

  int getCount();

  boolean moveToNext();

  int getColumnCount();

  String getColumnName(int columnIndex);

  int getType(int columnIndex);

  boolean isNull(int columnIndex);

  String getString(int columnIndex);

  long getLong(int columnIndex);

  double getDouble(int columnIndex);

  byte[] getBlob(int columnIndex);

  @Override
  void close();
}
