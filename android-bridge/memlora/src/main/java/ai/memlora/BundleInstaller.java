package ai.memlora;

import android.content.Context;
import android.content.res.AssetManager;
import java.io.File;
import java.io.FileOutputStream;
import java.io.IOException;
import java.io.InputStream;
import java.io.OutputStream;
import java.nio.charset.StandardCharsets;
import java.util.Arrays;
import java.util.Map;

/**
 * Copies a bundle from the app's assets (laid out by {@code memlora-export ... --android-assets DIR}:
 * {@code assets/memlora/bundle.json} + every listed file) to a real directory, because ONNX Runtime
 * GenAI loads models from file paths. Only files the manifest lists are copied, each path checked to
 * stay inside the target; the copy is staged and renamed into place, and skipped when the installed
 * manifest is byte-identical. The staged copy is verified in full (sizes + sha256) before it is moved into
 * place, and a stamp of what was verified is written beside it ({@link BundleManifest#writeStamp}), so
 * {@link BundleManifest#open} (what {@link Memory#open} calls) only compares sizes and modification times.
 */
public final class BundleInstaller {
  /** Asset folder written by {@code --android-assets} ({@code export/android_assets.py: ASSET_SUBDIR}). */
  public static final String ASSET_DIR = "memlora";

  private BundleInstaller() {}

  /** Where the bundle's bytes come from: the app's assets on a device, a directory in host tests. */
  public interface AssetSource {
    InputStream open(String name) throws IOException;
  }

  /** An {@link AssetSource} over Android's {@link AssetManager}. */
  public static AssetSource of(final AssetManager assets) {
    return new AssetSource() {
      @Override
      public InputStream open(String name) throws IOException {
        return assets.open(name);
      }
    };
  }

  /** Installs {@code assets/memlora} into {@code context.getNoBackupFilesDir()/memlora-bundle}; returns it. */
  public static File install(Context context) throws IOException {
    return install(of(context.getAssets()), ASSET_DIR, new File(context.getNoBackupFilesDir(), "memlora-bundle"));
  }

  /** Installs {@code assets/<assetDir>} into {@code target} (replaced when the bundle changed). */
  @SuppressWarnings("unchecked")
  public static File install(AssetSource assets, String assetDir, File target) throws IOException {
    byte[] manifestBytes = readAsset(assets, assetDir + "/" + BundleManifest.MANIFEST);
    File installed = new File(target, BundleManifest.MANIFEST);
    if (installed.isFile() && Arrays.equals(BundleManifest.readAll(installed), manifestBytes)) {
      return target; // same bundle already installed (Memory.open verifies it)
    }
    Object manifest;
    try {
      manifest = StrictJson.loads(new String(manifestBytes, StandardCharsets.UTF_8));
    } catch (StrictJson.Invalid e) {
      throw new BundleException("assets/" + assetDir + "/" + BundleManifest.MANIFEST + ": not valid JSON (" + e.getMessage() + ")");
    }
    Object files = manifest instanceof Map ? ((Map<String, Object>) manifest).get("files") : null;
    if (!(files instanceof Map)) {
      throw new BundleException("assets/" + assetDir + "/" + BundleManifest.MANIFEST + ": missing required field 'files'");
    }
    File parent = target.getAbsoluteFile().getParentFile();
    if (!parent.isDirectory() && !parent.mkdirs()) {
      throw new IOException("cannot create " + parent);
    }
    File staging = new File(parent, "." + target.getName() + ".tmp");
    deleteTree(staging);
    if (!staging.mkdirs()) {
      throw new IOException("cannot create " + staging);
    }
    try {
      for (String rel : ((Map<String, Object>) files).keySet()) {
        File dest = BundleManifest.safePath(staging, rel, "file");
        File dir = dest.getParentFile();
        if (!dir.isDirectory() && !dir.mkdirs()) {
          throw new IOException("cannot create " + dir);
        }
        copy(assets, assetDir + "/" + rel, dest);
      }
      OutputStream out = new FileOutputStream(new File(staging, BundleManifest.MANIFEST));
      try {
        out.write(manifestBytes);
      } finally {
        out.close();
      }
      BundleManifest.load(staging, true); // the full check, once
      deleteTree(target);
      BundleManifest.stampFile(target).delete();
      if (!staging.renameTo(target)) {
        throw new IOException("cannot move " + staging + " to " + target);
      }
      BundleManifest.writeStamp(target);
    } finally {
      deleteTree(staging);
    }
    return target;
  }

  private static byte[] readAsset(AssetSource assets, String name) throws IOException {
    return BundleManifest.readAll(assets.open(name));
  }

  private static void copy(AssetSource assets, String name, File dest) throws IOException {
    InputStream in = assets.open(name);
    try {
      OutputStream out = new FileOutputStream(dest);
      try {
        BundleManifest.forEachChunk(in, (buf, n) -> out.write(buf, 0, n));
      } finally {
        out.close();
      }
    } finally {
      in.close();
    }
  }

  static void deleteTree(File f) {
    File[] children = BundleManifest.isSymlink(f) ? null : f.listFiles();
    if (children != null) {
      for (File c : children) {
        deleteTree(c);
      }
    }
    if (f.exists() && !f.delete()) {
      throw new MemloraException("cannot delete " + f);
    }
  }
}
