package ai.memlora;

import static org.junit.Assert.assertNotNull;
import static org.junit.Assert.assertTrue;

import java.io.File;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.Random;
import org.junit.Test;

/**
 * Bad input never crashes the bridge: every prefix, truncation and random corruption of the golden model
 * outputs parses without throwing into valid values only; a store written by Java over a file is left for
 * Python to open (the pytest side checks it).
 */
public class RobustnessTest {
  @Test
  public void parsersNeverThrowOnCorruptedOutputs() {
    Random random = new Random(1234);
    String alphabet = "{}[]\",:'\\ \n`<>/|#*-0123456789aeIOUtrunfl\u00e9\u2603";
    int checked = 0;
    for (Map<String, Object> c : Golden.cases("parsing.json")) {
      String text = (String) c.get("text");
      List<String> variants = new ArrayList<String>();
      for (int cut = 0; cut <= text.length(); cut += Math.max(1, text.length() / 25)) {
        variants.add(text.substring(0, cut));
      }
      for (int k = 0; k < 20; k++) {
        StringBuilder b = new StringBuilder(text);
        for (int m = 0; m < 1 + random.nextInt(4) && b.length() > 0; m++) {
          int at = random.nextInt(b.length());
          if (random.nextBoolean()) {
            b.setCharAt(at, alphabet.charAt(random.nextInt(alphabet.length())));
          } else {
            b.insert(at, alphabet.charAt(random.nextInt(alphabet.length())));
          }
        }
        variants.add(b.toString());
      }
      for (String v : variants) {
        ParseResult<List<String>> facts = OutputParser.parseFacts(v);
        for (String f : facts.value) {
          assertTrue(PyRepr.repr(v), !f.isEmpty() && f.equals(PyStr.strip(f)));
        }
        for (UpdateOp op : OutputParser.parseMemoryUpdate(v).value) {
          assertTrue(PyRepr.repr(v), OutputParser.EVENTS.contains(op.event));
          if (op.event.equals("UPDATE") || op.event.equals("DELETE")) {
            assertNotNull(PyRepr.repr(v), op.id);
          }
        }
        ParseResult<VqaAnswer> vqa = OutputParser.parseVqa(v);
        assertTrue(vqa.value == null || !vqa.value.answer.isEmpty());
        checked++;
      }
    }
    assertTrue(checked > 1000);
  }

  @Test
  public void deepNestingDoesNotOverflow() {
    StringBuilder b = new StringBuilder();
    for (int k = 0; k < 20000; k++) {
      b.append("[{\"facts\": ");
    }
    assertTrue(OutputParser.parseFacts(b.toString()).value.isEmpty());
  }

  /** With -Dmemlora.interop=DIR: leave DIR/memory.db written by the Java store for Python to open. */
  @Test
  public void writesAStoreForPython() {
    String dir = System.getProperty("memlora.interop");
    if (dir == null) {
      return;
    }
    File db = new File(dir, "memory.db");
    assertTrue(new File(dir).isDirectory() || new File(dir).mkdirs());
    MemoryStore store = new MemoryStore(JdbcSqlDatabase.open(db.getPath()), 4, Golden.counter("mem-%03d"),
        Golden.clock("2024-01-01T00:00:%02d+00:00"));
    try {
      for (Map<String, Object> c : Golden.cases("store.json")) {
        Map<String, Object> step = Golden.map(c.get("step"));
        if ("reset".equals(step.get("op"))) {
          break; // keep the interesting state
        }
        try {
          StoreGoldenTest.run(store, step);
        } catch (MemloraException expected) {
          // the script's refused steps
        }
      }
    } finally {
      store.close();
    }
  }
}
