package ai.memlora;

import java.math.BigDecimal;
import java.math.BigInteger;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

/** Python semantics over parsed JSON values (truthiness, type names, {@code str(int)}). */
final class JsonValues {
  private JsonValues() {}

  private static final BigInteger LONG_MIN = BigInteger.valueOf(Long.MIN_VALUE);
  private static final BigInteger LONG_MAX = BigInteger.valueOf(Long.MAX_VALUE);

  /** An integer literal as {@link Long} when it fits, else {@link BigInteger} (Python ints are unbounded). */
  static Number integer(String digits) {
    BigInteger v = new BigInteger(digits);
    if (v.compareTo(LONG_MIN) >= 0 && v.compareTo(LONG_MAX) <= 0) {
      return v.longValue();
    }
    return v;
  }

  static boolean isInt(Object v) {
    return v instanceof Long || v instanceof Integer || v instanceof BigInteger;
  }

  static boolean isFloat(Object v) {
    return v instanceof Double || v instanceof Float;
  }

  /** Python truthiness of a JSON value. */
  static boolean truthy(Object v) {
    if (v == null) {
      return false;
    } else if (v instanceof Boolean) {
      return (Boolean) v;
    } else if (v instanceof String) {
      return !((String) v).isEmpty();
    } else if (v instanceof Map) {
      return !((Map<?, ?>) v).isEmpty();
    } else if (v instanceof List) {
      return !((List<?>) v).isEmpty();
    } else if (v instanceof BigInteger) {
      return ((BigInteger) v).signum() != 0;
    } else if (v instanceof Number) {
      return ((Number) v).doubleValue() != 0.0;
    }
    return true;
  }

  /** A dict with these keys in this order: {@code object("k1", v1, "k2", v2, ...)}. */
  static Map<String, Object> object(Object... keysAndValues) {
    if (keysAndValues.length % 2 != 0) {
      throw new IllegalArgumentException("object() takes key, value pairs");
    }
    Map<String, Object> m = new LinkedHashMap<String, Object>();
    for (int k = 0; k < keysAndValues.length; k += 2) {
      m.put((String) keysAndValues[k], keysAndValues[k + 1]);
    }
    return m;
  }

  /** {@code str(int(x))} for a float with an integral value. */
  static String integralFloatToString(double d) {
    return new BigDecimal(d).toBigInteger().toString();
  }
}
