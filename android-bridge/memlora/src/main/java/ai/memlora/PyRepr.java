package ai.memlora;

import java.util.List;
import java.util.Map;

/** Python's {@code repr}/{@code str}/{@code type().__name__} for the JSON-shaped values error messages quote. */
final class PyRepr {
  private PyRepr() {}

  static String typeName(Object value) {
    if (value == null) {
      return "NoneType";
    } else if (value instanceof String) {
      return "str";
    } else if (value instanceof Boolean) {
      return "bool";
    } else if (JsonValues.isInt(value)) {
      return "int";
    } else if (value instanceof Number) {
      return "float";
    } else if (value instanceof Map) {
      return "dict";
    } else if (value instanceof List) {
      return "list";
    }
    return value.getClass().getSimpleName();
  }

  static String str(Object value) {
    if (value instanceof String) {
      return (String) value;
    }
    if (value instanceof Double || value instanceof Float) {
      return floatRepr(((Number) value).doubleValue());
    }
    if (value instanceof Number || value == null || value instanceof Boolean) {
      return repr(value);
    }
    return String.valueOf(value);
  }

  static String repr(Object value) {
    if (value == null) {
      return "None";
    } else if (value instanceof Boolean) {
      return ((Boolean) value) ? "True" : "False";
    } else if (value instanceof String) {
      String s = (String) value;
      char quote = s.indexOf('\'') >= 0 && s.indexOf('"') < 0 ? '"' : '\'';
      StringBuilder out = new StringBuilder().append(quote);
      for (int i = 0; i < s.length(); i++) {
        char c = s.charAt(i);
        if (c == quote || c == '\\') {
          out.append('\\').append(c);
        } else if (c == '\n') {
          out.append("\\n");
        } else if (c == '\r') {
          out.append("\\r");
        } else if (c == '\t') {
          out.append("\\t");
        } else if (c < 0x20 || c == 0x7f) {
          out.append(String.format("\\x%02x", (int) c));
        } else {
          out.append(c);
        }
      }
      return out.append(quote).toString();
    } else if (value instanceof Map) {
      StringBuilder out = new StringBuilder("{");
      boolean first = true;
      for (Map.Entry<?, ?> e : ((Map<?, ?>) value).entrySet()) {
        if (!first) {
          out.append(", ");
        }
        first = false;
        out.append(repr(e.getKey())).append(": ").append(repr(e.getValue()));
      }
      return out.append('}').toString();
    } else if (value instanceof List) {
      StringBuilder out = new StringBuilder("[");
      boolean first = true;
      for (Object item : (List<?>) value) {
        if (!first) {
          out.append(", ");
        }
        first = false;
        out.append(repr(item));
      }
      return out.append(']').toString();
    } else if (value instanceof Double || value instanceof Float) {
      return str(value);
    } else if (value instanceof Number) {
      return String.valueOf(value);
    }
    return String.valueOf(value);
  }

  /** Python's {@code repr(float)}: shortest digits, exponent form below 1e-4 and from 1e16. */
  static String floatRepr(double d) {
    if (Double.isNaN(d)) {
      return "nan";
    }
    if (Double.isInfinite(d)) {
      return d > 0 ? "inf" : "-inf";
    }
    if (d == 0.0) {
      return (1.0 / d < 0) ? "-0.0" : "0.0";
    }
    java.math.BigDecimal bd = new java.math.BigDecimal(Double.toString(d)).stripTrailingZeros();
    String digits = bd.unscaledValue().abs().toString();
    int exp10 = digits.length() - 1 - bd.scale(); // position of the first digit
    String sign = d < 0 ? "-" : "";
    if (exp10 >= -4 && exp10 < 16) {
      String plain = bd.abs().toPlainString();
      if (plain.indexOf('.') < 0) {
        plain += ".0";
      }
      return sign + plain;
    }
    String mantissa = digits.length() == 1 ? digits : digits.charAt(0) + "." + digits.substring(1);
    String e = String.valueOf(Math.abs(exp10));
    if (e.length() < 2) {
      e = "0" + e;
    }
    return sign + mantissa + "e" + (exp10 < 0 ? "-" : "+") + e;
  }
}
