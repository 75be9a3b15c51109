package ai.memlora.sample;

import ai.memlora.BundleInstaller;
import ai.memlora.Memory;
import ai.memlora.MemoryConfig;
import ai.memlora.MemoryStore;
import android.app.Activity;
import android.os.Bundle;
import android.os.Handler;
import android.os.Looper;
import android.widget.Button;
import android.widget.EditText;
import android.widget.ScrollView;
import android.widget.TextView;
import java.io.File;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;

/**
 * A minimal chat with memory: statements are remembered (Memory.add), questions (ending with "?") are
 * answered from memory (Memory.answer). All model work runs on one background thread.
 */
public final class ChatActivity extends Activity {
  private static final String USER = "me";

  private final ExecutorService worker = Executors.newSingleThreadExecutor();
  private final Handler main = new Handler(Looper.getMainLooper());
  private Memory memory;
  private TextView transcript;
  private ScrollView scroll;
  private Button send;

  @Override
  protected void onCreate(Bundle state) {
    super.onCreate(state);
    setContentView(R.layout.activity_chat);
    transcript = findViewById(R.id.transcript);
    scroll = findViewById(R.id.scroll);
    send = findViewById(R.id.send);
    final EditText input = findViewById(R.id.input);
    show("Loading the on-device memory...");
    worker.execute(() -> {
      try {
        // 1. copy the bundle out of the APK (once), 2. open the memory (verifies every checksum).
        File bundle = BundleInstaller.install(this);
        MemoryConfig config = new MemoryConfig();
        config.threads = 4;
        memory = Memory.open(bundle, new File(getNoBackupFilesDir(), "memory"), config);
        post("Ready. " + memory.getAll(USER).size() + " memories.");
        main.post(() -> send.setEnabled(true));
      } catch (Exception e) {
        post("Cannot open the memory: " + e.getMessage());
      }
    });
    send.setOnClickListener(v -> {
      final String text = input.getText().toString().trim();
      if (text.isEmpty()) {
        return;
      }
      input.setText("");
      show("you: " + text);
      send.setEnabled(false);
      worker.execute(() -> {
        try {
          if (text.endsWith("?")) {
            Memory.AnswerResult answer = memory.answer(text, USER);
            post("memlora: " + answer.text + "  (" + answer.memories.size() + " memories)");
          } else {
            Memory.AddResult added = memory.add(text, USER);
            StringBuilder sb = new StringBuilder("memlora: noted");
            for (MemoryStore.MemoryEvent e : added.events) {
              sb.append("\n  ").append(e.event).append(' ').append(e.text);
            }
            if (!added.rejected.isEmpty()) {
              sb.append("\n  (").append(added.rejected.size()).append(" model outputs not used)");
            }
            post(sb.toString());
          }
        } catch (RuntimeException e) {
          post("error: " + e.getMessage());
        } finally {
          main.post(() -> send.setEnabled(true));
        }
      });
    });
  }

  private void post(final String line) {
    main.post(() -> show(line));
  }

  private void show(String line) {
    transcript.append(line + "\n\n");
    scroll.post(() -> scroll.fullScroll(ScrollView.FOCUS_DOWN));
  }

  @Override
  protected void onDestroy() {
    worker.execute(() -> {
      if (memory != null) {
        memory.close();
      }
    });
    worker.shutdown();
    super.onDestroy();
  }
}
