// Compile-only stub (test tree, never shipped): signatures of the Android SDK public API.
package android.content;

import android.content.res.AssetManager;
import java.io.File;

public abstract class Context {
  public abstract AssetManager getAssets();

  public abstract File getFilesDir();

  public abstract File getNoBackupFilesDir();
}
