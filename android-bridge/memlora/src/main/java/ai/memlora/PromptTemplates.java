package ai.memlora;

import java.util.Collections;
import java.util.List;
import java.util.Map;

/**
 * The templates of one prompt set, verbatim copies of {@code memlora.runtime.prompts.PROMPT_SETS}; the data
 * is generated into {@link PromptSets} by {@code android-bridge/tools/gen_prompt_templates.py}.
 */
public final class PromptTemplates {
  /** What {@code Prompts.formatMemories} renders for an empty memory list. */
  public static final String NO_MEMORIES = PromptSets.NO_MEMORIES;

  private static final Map<String, PromptTemplates> SETS = Collections.unmodifiableMap(PromptSets.create());

  public final String name;
  public final String extractionSystem;
  public final String updateUser;
  public final String generationUser;
  public final String vqaUser;
  /** Literal system message of the generation stage, or null. */
  public final String generationSystem;
  /** Key order of each old memory in the update prompt: {@code [id, text]} (Mem0's) or {@code [text, id]}. */
  public final List<String> oldMemoryKeys;
  /** One memory with a timestamp in the generation prompt (template with {timestamp} and {text}). */
  public final String timedMemoryLine;

  PromptTemplates(
      String name,
      String extractionSystem,
      String updateUser,
      String generationUser,
      String vqaUser,
      String generationSystem,
      List<String> oldMemoryKeys,
      String timedMemoryLine) {
    this.name = name;
    this.extractionSystem = extractionSystem;
    this.updateUser = updateUser;
    this.generationUser = generationUser;
    this.vqaUser = vqaUser;
    this.generationSystem = generationSystem;
    this.oldMemoryKeys = Collections.unmodifiableList(oldMemoryKeys);
    this.timedMemoryLine = timedMemoryLine;
  }

  /** Prompt sets by name, in the Python order. */
  public static Map<String, PromptTemplates> all() {
    return SETS;
  }
}
