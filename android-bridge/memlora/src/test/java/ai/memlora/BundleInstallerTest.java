package ai.memlora;

import static org.junit.Assert.assertEquals;
import static org.junit.Assert.assertFalse;
import static org.junit.Assert.assertTrue;
import static org.junit.Assert.fail;

import java.io.File;
import java.io.FileInputStream;
import java.io.FileOutputStream;
import java.io.IOException;
import java.io.InputStream;
import java.nio.charset.StandardCharsets;
import org.junit.Rule;
import org.junit.Test;
import org.junit.rules.TemporaryFolder;

/**
 * Installing a bundle from "assets" (a directory here) gives a bundle that verifies, with a stamp of the full check;
 * bad manifests copy nothing; {@link BundleManifest#open} re-hashes only when a file's size or mtime changed.
 */
public class BundleInstallerTest {
  @Rule public TemporaryFolder tmp = new TemporaryFolder();

  static BundleInstaller.AssetSource dir(final File root) {
    return new BundleInstaller.AssetSource() {
      @Override
      public InputStream open(String name) throws IOException {
        return new FileInputStream(new File(root, name));
      }
    };
  }

  @Test
  public void installsAVerifiableCopyAndSkipsAnUnchangedOne() throws IOException {
    File assets = new File(Golden.dir(), "bundles");
    File target = new File(tmp.getRoot(), "app/files/memlora-bundle");
    BundleInstaller.install(dir(assets), "valid", target);
    BundleManifest bundle = BundleManifest.load(target, true);
    assertEquals("int4", bundle.precision);
    assertTrue(bundle.unlisted.isEmpty());
    File marker = new File(target, "model/model.onnx");
    long stamp = marker.lastModified() - 10_000;
    assertTrue(marker.setLastModified(stamp));
    BundleInstaller.install(dir(assets), "valid", target); // same manifest: nothing copied again
    assertEquals(stamp, marker.lastModified());
  }

  @Test
  public void installVerifiesOnceAndOpenChecksSizesAndMtimes() throws IOException {
    File target = new File(tmp.getRoot(), "app/files/memlora-bundle");
    BundleInstaller.install(dir(new File(Golden.dir(), "bundles")), "valid", target);
    File stampFile = BundleManifest.stampFile(target);
    assertTrue("install writes the stamp of its full check", stampFile.isFile());
    assertEquals(BundleManifest.currentStamp(target), new String(BundleManifest.readAll(stampFile), StandardCharsets.UTF_8));
    assertEquals("int4", BundleManifest.open(target).precision);

    File model = new File(target, "model/model.onnx");
    byte[] original = BundleManifest.readAll(model);
    long mtime = model.lastModified();
    byte[] changed = original.clone();
    changed[0] ^= 1;
    write(model, changed);
    assertTrue(model.setLastModified(mtime));
    // the cheap check's trade-off, stated: a same-size change that keeps the mtime is not re-hashed
    assertEquals("int4", BundleManifest.open(target).precision);
    assertTrue(model.setLastModified(mtime - 5_000));
    try {
      BundleManifest.open(target);
      fail("a changed file with a new mtime was not re-hashed");
    } catch (BundleException expected) {
      assertTrue(expected.getMessage(), expected.getMessage().contains("fails its sha256 check"));
    }
    write(model, original);
    assertTrue(model.setLastModified(mtime - 10_000));
    assertEquals("int4", BundleManifest.open(target).precision); // full check passes, stamp renewed
    assertEquals(BundleManifest.currentStamp(target), new String(BundleManifest.readAll(stampFile), StandardCharsets.UTF_8));
  }

  private static void write(File f, byte[] data) throws IOException {
    FileOutputStream out = new FileOutputStream(f);
    try {
      out.write(data);
    } finally {
      out.close();
    }
  }

  @Test
  public void aManifestPathLeavingTheBundleCopiesNothing() throws IOException {
    File assets = tmp.newFolder("assets");
    File bundle = new File(assets, "memlora");
    assertTrue(bundle.mkdirs());
    FileOutputStream out = new FileOutputStream(new File(bundle, "bundle.json"));
    out.write("{\"format_version\": 1, \"files\": {\"../../escape.txt\": {\"size\": 1, \"sha256\": \"x\"}}}"
        .getBytes(StandardCharsets.UTF_8));
    out.close();
    File target = new File(tmp.getRoot(), "out/memlora-bundle");
    try {
      BundleInstaller.install(dir(assets), "memlora", target);
      fail("a path outside the bundle was accepted");
    } catch (BundleException expected) {
      assertTrue(expected.getMessage(), expected.getMessage().contains("points outside the bundle"));
    }
    assertFalse(target.exists());
    assertFalse(new File(tmp.getRoot(), "escape.txt").exists());
  }
}
