package ai.memlora;

import java.io.File;

/**
 * Measures what opening a bundle costs: the full check ({@link BundleManifest#load} with sha256) against the per-open
 * check of {@link BundleManifest#open} once the stamp exists. Not a test (no timings are asserted); run by hand:
 * {@code java -cp CLASSES ai.memlora.BundleOpenTiming BUNDLE_DIR [REPEATS]} (docs/android.md).
 */
public final class BundleOpenTiming {
  private BundleOpenTiming() {}

  public static void main(String[] args) {
    File root = new File(args[0]);
    int repeats = args.length > 1 ? Integer.parseInt(args[1]) : 5;
    long bytes = 0;
    for (File f : listFiles(root)) {
      bytes += f.length();
    }
    BundleManifest.open(root); // warm-up; writes the stamp
    double full = Double.MAX_VALUE;
    double stamped = Double.MAX_VALUE;
    for (int i = 0; i < repeats; i++) {
      long t0 = System.nanoTime();
      BundleManifest.load(root, true);
      full = Math.min(full, (System.nanoTime() - t0) / 1e6);
      t0 = System.nanoTime();
      BundleManifest.open(root);
      stamped = Math.min(stamped, (System.nanoTime() - t0) / 1e6);
    }
    System.out.printf("%s: %.1f MB; full check (sizes + sha256) %.1f ms; per-open check (stamp: sizes + mtimes) %.2f ms "
        + "(best of %d)%n", root, bytes / 1e6, full, stamped, repeats);
  }

  private static java.util.List<File> listFiles(File dir) {
    java.util.List<File> out = new java.util.ArrayList<File>();
    File[] children = dir.listFiles();
    if (children != null) {
      for (File c : children) {
        if (c.isDirectory()) {
          out.addAll(listFiles(c));
        } else {
          out.add(c);
        }
      }
    }
    return out;
  }
}
