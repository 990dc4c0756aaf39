//! Numbers in values, parsed and printed as Redis does, so that INCR and INCRBYFLOAT accept and
//! produce exactly what Redis would.

/// Parses a Redis integer (`string2ll`): an optional `-`, then digits with no leading zero
/// (except "0" itself), no spaces, no `+`, within i64.
pub fn parse_int(s: &[u8]) -> Option<i64> {
    let (negative, digits) = match s.strip_prefix(b"-") {
        Some(rest) => (true, rest),
        None => (false, s),
    };
    let leading_zero = digits.len() > 1 && digits[0] == b'0';
    if digits.is_empty() || digits.len() > 19 || leading_zero || (negative && digits == b"0") {
        return None;
    }
    // Accumulate negatively, so that i64::MIN, whose magnitude i64 cannot hold, parses too.
    let mut value: i64 = 0;
    for &digit in digits {
        if !digit.is_ascii_digit() {
            return None;
        }
        value = value.checked_mul(10)?.checked_sub(i64::from(digit - b'0'))?;
    }
    if negative {
        Some(value)
    } else {
        value.checked_neg()
    }
}

/// Parses a Redis float (`strtold` on the whole string): no surrounding spaces, finite or
/// `inf`; NaN is refused.
pub fn parse_float(s: &[u8]) -> Option<f64> {
    let text = std::str::from_utf8(s).ok()?;
    if text.is_empty() || text.trim() != text {
        return None;
    }
    let value: f64 = match text.to_ascii_lowercase().as_str() {
        "inf" | "+inf" | "infinity" | "+infinity" => f64::INFINITY,
        "-inf" | "-infinity" => f64::NEG_INFINITY,
        _ => text.parse().ok()?,
    };
    (!value.is_nan()).then_some(value)
}

/// Prints a float the way INCRBYFLOAT stores it: the shortest text that reads back to the
/// same value, without a trailing ".0" and without an exponent.
pub fn format_float(value: f64) -> String {
    if value == 0.0 {
        return "0".to_string(); // also -0
    }
    format!("{value}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_int_table() {
        let table: &[(&str, Option<i64>)] = &[
            ("0", Some(0)),
            ("10", Some(10)),
            ("-10", Some(-10)),
            ("9223372036854775807", Some(i64::MAX)),
            ("-9223372036854775808", Some(i64::MIN)),
            ("9223372036854775808", None),
            ("+1", None),
            ("01", None),
            ("-0", None),
            (" 1", None),
            ("1 ", None),
            ("", None),
            ("-", None),
            ("1.5", None),
            ("abc", None),
        ];
        for (text, want) in table {
            assert_eq!(parse_int(text.as_bytes()), *want, "{text:?}");
        }
    }

    #[test]
    fn parse_float_table() {
        let table: &[(&str, Option<f64>)] = &[
            ("1.5", Some(1.5)),
            ("-0.1", Some(-0.1)),
            ("10", Some(10.0)),
            ("5.0e3", Some(5000.0)),
            ("inf", Some(f64::INFINITY)),
            ("-inf", Some(f64::NEG_INFINITY)),
            ("nan", None),
            (" 1", None),
            ("", None),
            ("1x", None),
        ];
        for (text, want) in table {
            assert_eq!(parse_float(text.as_bytes()), *want, "{text:?}");
        }
    }

    #[test]
    fn format_float_table() {
        let table: &[(f64, &str)] =
            &[(10.5, "10.5"), (3.0, "3"), (-0.0, "0"), (0.1 + 0.2, "0.30000000000000004"), (5000.0, "5000")];
        for (value, want) in table {
            assert_eq!(format_float(*value), *want);
        }
    }
}
