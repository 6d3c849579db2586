//! Resource quantities: parsing the text people write in manifests (`"500m"`, `"1.5"`,
//! `"256Mi"`, `"1e9"`) into exact integers in a resource's base unit (millicores, bytes or a
//! count), and printing those integers back in one canonical form.
//!
//! Grammar (Kubernetes-compatible): `[+|-] digits [. digits] [exponent | suffix]`, where the
//! exponent is `e`/`E`, an optional sign and digits, and the suffix is one of `Ki Mi Gi Ti Pi Ei`
//! (powers of 1024), `k M G T P E` (powers of 1000) or `m` (thousandths, cpu only). Decisions:
//! `".5"` and `"1."` are accepted like Kubernetes does; a number needs at least one digit, so
//! `"."` and a lone `"Mi"` are not numbers; `"-0"` (any spelling of zero with a minus) is 0, not
//! negative; `"1E"` means 1 exa while `"1E3"` is an exponent; whitespace anywhere is an error.
//! Arithmetic is exact (a `u128` mantissa and a decimal exponent, never floats). The one
//! limit: more than 38 significant digits (leading and trailing zeros do not count) are
//! rejected, as too large if the value is, else as too precise.

use std::fmt;

/// How a resource is measured; decides which suffixes are legal and how values print.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Unit {
    /// Thousandths of a core (`cpu`); the only unit that accepts the `m` suffix.
    Millicores,
    /// Bytes (`memory`, `ephemeral-storage`); printed with the largest exact binary suffix.
    Bytes,
    /// Whole things (`gpu` and extended resources).
    Count,
}

impl Unit {
    /// The unit of a resource by name: `cpu` is measured in millicores, `memory` and
    /// `ephemeral-storage` in bytes, anything else (`gpu`, extended names) is a count.
    pub fn for_resource(name: &str) -> Unit {
        match name {
            "cpu" => Unit::Millicores,
            "memory" | "ephemeral-storage" => Unit::Bytes,
            _ => Unit::Count,
        }
    }
}

/// Why a quantity was rejected. Messages quote the input and are meant to follow a field
/// name, e.g. `resources.memory: "-1Gi" is negative`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QuantityError {
    /// The text is empty.
    #[error("quantity is empty")]
    Empty,
    /// The text starts or ends with whitespace.
    #[error("{text:?} has leading or trailing whitespace")]
    Whitespace { text: String },
    /// The text is not a decimal number (`"NaN"`, `"inf"`, `"0x10"`, `"1..2"`, `"."`, `"Mi"`).
    #[error("{text:?} is not a number")]
    NotANumber { text: String },
    /// The value is below zero.
    #[error("{text:?} is negative")]
    Negative { text: String },
    /// The number is followed by letters that are not a known suffix.
    #[error("{text:?} has unknown suffix {suffix:?} (expected {})", suffix_list(.unit))]
    UnknownSuffix {
        text: String,
        suffix: String,
        unit: Unit,
    },
    /// The number has both an exponent and a suffix (`"1e3Ki"`).
    #[error("{text:?} has both an exponent and a suffix")]
    ExponentWithSuffix { text: String },
    /// The `m` (milli) suffix on something other than cpu.
    #[error("{text:?} uses the milli suffix \"m\", which only cpu accepts{}", milli_hint(.unit))]
    MilliNotAllowed { text: String, unit: Unit },
    /// The value is finer than the base unit (a fraction of a millicore, byte or count).
    #[error("{text:?} {}", too_precise(.unit))]
    TooPrecise { text: String, unit: Unit },
    /// The value exceeds `u64::MAX` in the base unit.
    #[error("{text:?} is too large (over 2^64-1 {})", unit_noun(.unit))]
    Overflow { text: String, unit: Unit },
}

impl QuantityError {
    /// The rejected input text (empty for [`QuantityError::Empty`]).
    pub fn text(&self) -> &str {
        match self {
            QuantityError::Empty => "",
            QuantityError::Whitespace { text }
            | QuantityError::NotANumber { text }
            | QuantityError::Negative { text }
            | QuantityError::UnknownSuffix { text, .. }
            | QuantityError::ExponentWithSuffix { text }
            | QuantityError::MilliNotAllowed { text, .. }
            | QuantityError::TooPrecise { text, .. }
            | QuantityError::Overflow { text, .. } => text,
        }
    }
}

fn suffix_list(unit: &Unit) -> &'static str {
    match unit {
        Unit::Millicores => "m, k, M, G, T, P, E, Ki, Mi, Gi, Ti, Pi or Ei",
        Unit::Bytes | Unit::Count => "k, M, G, T, P, E, Ki, Mi, Gi, Ti, Pi or Ei",
    }
}

fn milli_hint(unit: &Unit) -> &'static str {
    match unit {
        Unit::Bytes => "; megabytes are \"M\" or \"Mi\"",
        Unit::Millicores | Unit::Count => "",
    }
}

fn too_precise(unit: &Unit) -> &'static str {
    match unit {
        Unit::Millicores => "is finer than 1m (one millicore)",
        Unit::Bytes => "is not a whole number of bytes",
        Unit::Count => "is not a whole number",
    }
}

fn unit_noun(unit: &Unit) -> &'static str {
    match unit {
        Unit::Millicores => "millicores",
        Unit::Bytes => "bytes",
        Unit::Count => "units",
    }
}

/// Binary suffixes with their power of two, smallest first.
const BINARY: [(&str, u32); 6] = [
    ("Ki", 10),
    ("Mi", 20),
    ("Gi", 30),
    ("Ti", 40),
    ("Pi", 50),
    ("Ei", 60),
];

/// Decimal suffixes (and milli) with their power of ten.
const DECIMAL: [(&str, i64); 7] = [
    ("m", -3),
    ("k", 3),
    ("M", 6),
    ("G", 9),
    ("T", 12),
    ("P", 15),
    ("E", 18),
];

/// The scale of a suffix as (power of ten, power of two); `None` if it is not a suffix.
fn suffix_scale(suffix: &str) -> Option<(i64, u32)> {
    if suffix.is_empty() {
        return Some((0, 0));
    }
    let decimal = DECIMAL
        .iter()
        .find(|(s, _)| *s == suffix)
        .map(|&(_, p)| (p, 0));
    decimal.or_else(|| {
        BINARY
            .iter()
            .find(|(s, _)| *s == suffix)
            .map(|&(_, p)| (0, p))
    })
}

/// Exponents are clamped to this magnitude: anything beyond is over- or underflow anyway.
const EXPONENT_CLAMP: i64 = 1 << 40;

/// The digits of a number, folded into `mantissa × 10^exp10` as they are read.
#[derive(Debug, Default)]
struct Digits {
    mantissa: u128,
    exp10: i64,
    /// Zeros read after the last non-zero digit, not yet folded into `mantissa`.
    pending_zeros: i64,
    /// More significant digits than a u128 holds: `mantissa` keeps the leading ones and
    /// `exp10` their magnitude, so the value is a lower bound of the real one.
    truncated: bool,
}

impl Digits {
    fn push(&mut self, digit: u8, in_fraction: bool) {
        if in_fraction {
            self.exp10 -= 1;
        }
        if self.truncated {
            self.exp10 += 1;
        } else if digit == 0 {
            if self.mantissa != 0 {
                self.pending_zeros += 1;
            }
        } else {
            let folded = u32::try_from(self.pending_zeros + 1)
                .ok()
                .and_then(|zeros| 10u128.checked_pow(zeros))
                .and_then(|scale| self.mantissa.checked_mul(scale))
                .and_then(|m| m.checked_add(u128::from(digit)));
            match folded {
                Some(m) => self.mantissa = m,
                None => {
                    self.truncated = true;
                    self.exp10 += self.pending_zeros + 1;
                }
            }
            self.pending_zeros = 0;
        }
    }

    /// Reads ASCII digits from `bytes[at..]`; returns the index after the last one.
    fn read(&mut self, bytes: &[u8], mut at: usize, in_fraction: bool) -> usize {
        while let Some(&b @ b'0'..=b'9') = bytes.get(at) {
            self.push(b - b'0', in_fraction);
            at += 1;
        }
        at
    }
}

/// Parses a quantity written as text (JSON numbers are passed as their literal text, e.g.
/// `"0.25"`, `"1073741824"`, `"1e9"`) into the base unit of `unit` (millicores, bytes or a
/// count). Never panics and does not allocate unless it fails.
pub fn parse(unit: Unit, text: &str) -> Result<u64, QuantityError> {
    let owned = || text.to_owned();
    if text.is_empty() {
        return Err(QuantityError::Empty);
    }
    if text.trim().len() != text.len() {
        return Err(QuantityError::Whitespace { text: owned() });
    }
    let bytes = text.as_bytes();
    let (negative, start) = match bytes.first() {
        Some(b'-') => (true, 1),
        Some(b'+') => (false, 1),
        _ => (false, 0),
    };
    let mut digits = Digits::default();
    let mut end = digits.read(bytes, start, false);
    let mut digit_count = end - start;
    if bytes.get(end) == Some(&b'.') {
        let fraction = end + 1;
        end = digits.read(bytes, fraction, true);
        digit_count += end - fraction;
    }
    if digit_count == 0 {
        return Err(QuantityError::NotANumber { text: owned() });
    }

    // Everything after the digits is an exponent or a suffix; `text[end..]` is on a char
    // boundary because only ASCII was consumed.
    let rest = &bytes[end..];
    let (exponent, binary) = if let [b'e' | b'E', b'0'..=b'9' | b'+' | b'-', ..] = rest {
        let (sign, digits_at) = match rest[1] {
            b'-' => (-1, 2),
            b'+' => (1, 2),
            _ => (1, 1),
        };
        let mut at = digits_at;
        let mut exponent: i64 = 0;
        while let Some(&b @ b'0'..=b'9') = rest.get(at) {
            exponent = (exponent * 10 + i64::from(b - b'0')).min(EXPONENT_CLAMP);
            at += 1;
        }
        if at == digits_at {
            return Err(QuantityError::NotANumber { text: owned() });
        }
        if at < rest.len() {
            return Err(match suffix_scale(&text[end + at..]) {
                Some(_) => QuantityError::ExponentWithSuffix { text: owned() },
                None => QuantityError::NotANumber { text: owned() },
            });
        }
        (sign * exponent, 0)
    } else {
        let suffix = &text[end..];
        match suffix_scale(suffix) {
            Some(_) if suffix == "m" && unit != Unit::Millicores => {
                return Err(QuantityError::MilliNotAllowed {
                    text: owned(),
                    unit,
                });
            }
            Some(scale) => scale,
            None if suffix.bytes().all(|b| b.is_ascii_alphabetic()) => {
                let suffix = suffix.to_owned();
                return Err(QuantityError::UnknownSuffix {
                    text: owned(),
                    suffix,
                    unit,
                });
            }
            None => return Err(QuantityError::NotANumber { text: owned() }),
        }
    };

    if digits.mantissa == 0 {
        return Ok(0);
    }
    if negative {
        return Err(QuantityError::Negative { text: owned() });
    }
    let base = if unit == Unit::Millicores { 3 } else { 0 };
    let power_of_ten = (digits.exp10 + digits.pending_zeros)
        .saturating_add(exponent)
        .saturating_add(base);
    match scale(digits.mantissa, power_of_ten, binary) {
        Ok(_) if digits.truncated => Err(QuantityError::TooPrecise {
            text: owned(),
            unit,
        }),
        Ok(value) => Ok(value),
        Err(Unfit::TooPrecise) => Err(QuantityError::TooPrecise {
            text: owned(),
            unit,
        }),
        Err(Unfit::Overflow) => Err(QuantityError::Overflow {
            text: owned(),
            unit,
        }),
    }
}

/// Why a value is not a u64 integer.
#[derive(Debug)]
enum Unfit {
    TooPrecise,
    Overflow,
}

/// `mantissa × 10^ten × 2^two` (with `mantissa != 0`, `two <= 60`) as an exact u64. A value
/// that is both too large and fractional is reported as too large.
fn scale(mantissa: u128, ten: i64, two: u32) -> Result<u64, Unfit> {
    let max = u128::from(u64::MAX);
    let value = if ten >= 0 {
        let value = u32::try_from(ten)
            .ok()
            .and_then(|ten| 10u128.checked_pow(ten))
            .and_then(|scale| mantissa.checked_mul(scale))
            .ok_or(Unfit::Overflow)?;
        if value > max >> two {
            return Err(Unfit::Overflow);
        }
        value << two
    } else {
        // Divide by 10^n = 5^n × 2^n: the 5s must divide the mantissa, the 2s may cancel
        // against the binary suffix. No 5^n above u128::MAX can divide the mantissa.
        let n = u32::try_from(ten.unsigned_abs()).unwrap_or(u32::MAX);
        let Some(fives) = 5u128.checked_pow(n) else {
            return Err(Unfit::TooPrecise);
        };
        let (quotient, remainder) = (mantissa / fives, mantissa % fives);
        let (value, exact) = if n >= two {
            let down = n - two; // below 56, because 5^n fits in a u128
            (quotient >> down, quotient.trailing_zeros() >= down)
        } else {
            let up = two - n;
            if quotient > max >> up {
                return Err(Unfit::Overflow);
            }
            (quotient << up, true)
        };
        if value > max {
            return Err(Unfit::Overflow);
        }
        if remainder != 0 || !exact {
            return Err(Unfit::TooPrecise);
        }
        value
    };
    u64::try_from(value).map_err(|_| Unfit::Overflow)
}

/// Canonical text of a value in the base unit of `unit` (`"500m"`, `"2"`, `"256Mi"`,
/// `"1000"`, `"3"`): whole cores without suffix, else millicores with `m`; bytes with the
/// largest binary suffix that divides them exactly, else plain; counts plain.
pub fn format(unit: Unit, value: u64) -> String {
    let mut text = String::with_capacity(24);
    // Writing into a String cannot fail.
    let _ = write(unit, value, &mut text);
    text
}

/// Same as [`format`], written into any [`fmt::Write`] (used by `Display` impls; no allocation).
pub fn write(unit: Unit, value: u64, out: &mut impl fmt::Write) -> fmt::Result {
    match unit {
        Unit::Millicores if value.is_multiple_of(1000) => write!(out, "{}", value / 1000),
        Unit::Millicores => write!(out, "{value}m"),
        Unit::Bytes => {
            let fits = |&&(_, shift): &&(&str, u32)| value != 0 && value.trailing_zeros() >= shift;
            match BINARY.iter().rev().find(fits) {
                Some((suffix, shift)) => write!(out, "{}{suffix}", value >> shift),
                None => write!(out, "{value}"),
            }
        }
        Unit::Count => write!(out, "{value}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use expect_test::{Expect, expect};
    use proptest::prelude::*;

    /// One line per input: the parsed value and its canonical form, or the error message.
    fn check(unit: Unit, inputs: &str, expected: Expect) {
        let lines: Vec<String> = inputs
            .split_whitespace()
            .map(|input| match parse(unit, input) {
                Ok(v) => format!("{input:?} = {v} = {}", format(unit, v)),
                Err(e) => format!("{input:?}: {e}"),
            })
            .collect();
        expected.assert_eq(&(lines.join("\n") + "\n"));
    }

    #[test]
    fn cpu() {
        let inputs = "
            500m 1.5 2 0.25 0.001 1e-3 1.5e3 1E3 +1 .5 1. -0 0e-999 0.0000 1k 1Ki
            18446744073709551615m 18446744073709551.615 0.0005 1.5m -1 -0.0001 1e999999999999
            1e-999999999999 18446744073709552 1e3m 5X 1e 1e+ 1..2 . NaN inf Infinity 0x10 m --1
            1m5
        ";
        check(
            Unit::Millicores,
            inputs,
            expect![[r#"
            "500m" = 500 = 500m
            "1.5" = 1500 = 1500m
            "2" = 2000 = 2
            "0.25" = 250 = 250m
            "0.001" = 1 = 1m
            "1e-3" = 1 = 1m
            "1.5e3" = 1500000 = 1500
            "1E3" = 1000000 = 1000
            "+1" = 1000 = 1
            ".5" = 500 = 500m
            "1." = 1000 = 1
            "-0" = 0 = 0
            "0e-999" = 0 = 0
            "0.0000" = 0 = 0
            "1k" = 1000000 = 1000
            "1Ki" = 1024000 = 1024
            "18446744073709551615m" = 18446744073709551615 = 18446744073709551615m
            "18446744073709551.615" = 18446744073709551615 = 18446744073709551615m
            "0.0005": "0.0005" is finer than 1m (one millicore)
            "1.5m": "1.5m" is finer than 1m (one millicore)
            "-1": "-1" is negative
            "-0.0001": "-0.0001" is negative
            "1e999999999999": "1e999999999999" is too large (over 2^64-1 millicores)
            "1e-999999999999": "1e-999999999999" is finer than 1m (one millicore)
            "18446744073709552": "18446744073709552" is too large (over 2^64-1 millicores)
            "1e3m": "1e3m" has both an exponent and a suffix
            "5X": "5X" has unknown suffix "X" (expected m, k, M, G, T, P, E, Ki, Mi, Gi, Ti, Pi or Ei)
            "1e": "1e" has unknown suffix "e" (expected m, k, M, G, T, P, E, Ki, Mi, Gi, Ti, Pi or Ei)
            "1e+": "1e+" is not a number
            "1..2": "1..2" is not a number
            ".": "." is not a number
            "NaN": "NaN" is not a number
            "inf": "inf" is not a number
            "Infinity": "Infinity" is not a number
            "0x10": "0x10" is not a number
            "m": "m" is not a number
            "--1": "--1" is not a number
            "1m5": "1m5" is not a number
        "#]],
        );
    }

    #[test]
    fn bytes() {
        let inputs = "
            256Mi 2Gi 1G 1e9 1073741824 1.5Ki 0.5Ki 1000 1024 0 16Ei 15Ei 18446744073709551615
            18446744073709551616 1E 1e18 0.5 0.1Ki 1e3Ki 512m -1Gi 1Kb 1KiB Mi 1e-1 +.5k
            100000000000000000000000000000000000000000000000000e-50
            0.000000000000000000000000000000000000000000000000001e51
            1.000000000000000000000000000000000000000000000000001
            123456789012345678901234567890123456789012345678901234567890
            0.000000000000000000867361737988403547205962240695953369140625Ei
        ";
        // The last one is exactly 2^-60 Ei = 1 byte, but its 42 significant digits do not fit
        // the u128 mantissa: the documented limitation.
        check(
            Unit::Bytes,
            inputs,
            expect![[r#"
                "256Mi" = 268435456 = 256Mi
                "2Gi" = 2147483648 = 2Gi
                "1G" = 1000000000 = 1000000000
                "1e9" = 1000000000 = 1000000000
                "1073741824" = 1073741824 = 1Gi
                "1.5Ki" = 1536 = 1536
                "0.5Ki" = 512 = 512
                "1000" = 1000 = 1000
                "1024" = 1024 = 1Ki
                "0" = 0 = 0
                "16Ei": "16Ei" is too large (over 2^64-1 bytes)
                "15Ei" = 17293822569102704640 = 15Ei
                "18446744073709551615" = 18446744073709551615 = 18446744073709551615
                "18446744073709551616": "18446744073709551616" is too large (over 2^64-1 bytes)
                "1E" = 1000000000000000000 = 976562500000000Ki
                "1e18" = 1000000000000000000 = 976562500000000Ki
                "0.5": "0.5" is not a whole number of bytes
                "0.1Ki": "0.1Ki" is not a whole number of bytes
                "1e3Ki": "1e3Ki" has both an exponent and a suffix
                "512m": "512m" uses the milli suffix "m", which only cpu accepts; megabytes are "M" or "Mi"
                "-1Gi": "-1Gi" is negative
                "1Kb": "1Kb" has unknown suffix "Kb" (expected k, M, G, T, P, E, Ki, Mi, Gi, Ti, Pi or Ei)
                "1KiB": "1KiB" has unknown suffix "KiB" (expected k, M, G, T, P, E, Ki, Mi, Gi, Ti, Pi or Ei)
                "Mi": "Mi" is not a number
                "1e-1": "1e-1" is not a whole number of bytes
                "+.5k" = 500 = 500
                "100000000000000000000000000000000000000000000000000e-50" = 1 = 1
                "0.000000000000000000000000000000000000000000000000001e51" = 1 = 1
                "1.000000000000000000000000000000000000000000000000001": "1.000000000000000000000000000000000000000000000000001" is not a whole number of bytes
                "123456789012345678901234567890123456789012345678901234567890": "123456789012345678901234567890123456789012345678901234567890" is too large (over 2^64-1 bytes)
                "0.000000000000000000867361737988403547205962240695953369140625Ei": "0.000000000000000000867361737988403547205962240695953369140625Ei" is not a whole number of bytes
            "#]],
        );
    }

    #[test]
    fn count() {
        let inputs = "
            1 2 3 1k 2Ki 1.5 0.5 1m -1 1e2 1.0
        ";
        check(
            Unit::Count,
            inputs,
            expect![[r#"
            "1" = 1 = 1
            "2" = 2 = 2
            "3" = 3 = 3
            "1k" = 1000 = 1000
            "2Ki" = 2048 = 2048
            "1.5": "1.5" is not a whole number
            "0.5": "0.5" is not a whole number
            "1m": "1m" uses the milli suffix "m", which only cpu accepts
            "-1": "-1" is negative
            "1e2" = 100 = 100
            "1.0" = 1 = 1
        "#]],
        );
    }

    #[test]
    fn whitespace_and_empty() {
        let message = |text| parse(Unit::Bytes, text).map_err(|e| e.to_string());
        assert_eq!(message(""), Err("quantity is empty".into()));
        let blank = |text| Err(format!("{text:?} has leading or trailing whitespace"));
        for text in [" 1", "1 ", "\t1", "1\n", " "] {
            assert_eq!(message(text), blank(text));
        }
        assert_eq!(message("1 Mi"), Err(r#""1 Mi" is not a number"#.into()));
    }

    #[test]
    fn formats() {
        let cases = [
            (Unit::Millicores, 500, "500m"),
            (Unit::Millicores, 2000, "2"),
            (Unit::Millicores, 0, "0"),
            (Unit::Bytes, 256 << 20, "256Mi"),
            (Unit::Bytes, 1000, "1000"),
            (Unit::Bytes, 1536, "1536"),
            (Unit::Bytes, 0, "0"),
            (Unit::Bytes, 1 << 63, "8Ei"),
            (Unit::Count, 3, "3"),
        ];
        for (unit, value, text) in cases {
            assert_eq!(format(unit, value), text);
        }
    }

    #[test]
    fn units_of_resources() {
        assert_eq!(Unit::for_resource("cpu"), Unit::Millicores);
        assert_eq!(Unit::for_resource("memory"), Unit::Bytes);
        assert_eq!(Unit::for_resource("ephemeral-storage"), Unit::Bytes);
        assert_eq!(Unit::for_resource("gpu"), Unit::Count);
        assert_eq!(Unit::for_resource("example.com/widget"), Unit::Count);
    }

    #[test]
    fn errors_carry_their_text() {
        let err = parse(Unit::Bytes, "-1Gi").err();
        assert_eq!(
            err,
            Some(QuantityError::Negative {
                text: "-1Gi".into()
            })
        );
        assert_eq!(err.map(|e| e.text().to_owned()).as_deref(), Some("-1Gi"));
        assert_eq!(QuantityError::Empty.text(), "");
    }

    fn unit() -> impl Strategy<Value = Unit> {
        prop_oneof![Just(Unit::Millicores), Just(Unit::Bytes), Just(Unit::Count)]
    }

    /// Any u64, biased towards values that print with suffixes.
    fn value() -> impl Strategy<Value = u64> {
        prop_oneof![
            any::<u64>(),
            (any::<u64>(), 0..64u32).prop_map(|(v, k)| v.wrapping_shl(k)),
            (0..u64::MAX / 1000).prop_map(|v| v * 1000),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn format_round_trips(unit in unit(), v in value()) {
            prop_assert_eq!(parse(unit, &format(unit, v)), Ok(v));
        }

        #[test]
        fn decimal_spellings_agree(v in any::<u64>(), zeros in 0..30usize) {
            let pad = "0".repeat(zeros);
            prop_assert_eq!(parse(Unit::Bytes, &format!("{v}{pad}e-{zeros}")), Ok(v));
            prop_assert_eq!(parse(Unit::Bytes, &format!("+{pad}{v}.{pad}e0")), Ok(v));
            let (whole, milli) = (v / 1000, v % 1000);
            prop_assert_eq!(parse(Unit::Millicores, &format!("{whole}.{milli:03}{pad}")), Ok(v));
            prop_assert_eq!(parse(Unit::Millicores, &format!("{v}m")), Ok(v));
        }

        #[test]
        fn never_panics(unit in unit(), text in "\\PC*") {
            let _ = parse(unit, &text);
        }

        #[test]
        fn never_panics_on_numberish(unit in unit(), text in "[0-9.eE+\\-kKMGTPEim ]{0,16}") {
            if let Ok(v) = parse(unit, &text) {
                prop_assert_eq!(parse(unit, &format(unit, v)), Ok(v));
            }
        }

        #[test]
        fn binary_suffixes((n, i) in (0..6usize).prop_flat_map(|i| (0..=u64::MAX >> BINARY[i].1, Just(i)))) {
            let (suffix, shift) = BINARY[i];
            prop_assert_eq!(parse(Unit::Bytes, &format!("{n}{suffix}")), Ok(n << shift));
            let too_big = (n | 1).saturating_add(u64::MAX >> shift);
            let overflow = parse(Unit::Bytes, &format!("{too_big}{suffix}"));
            prop_assert!(matches!(overflow, Err(QuantityError::Overflow { .. })), "{overflow:?}");
        }

        #[test]
        fn decimal_suffixes((n, i) in (1..7usize).prop_flat_map(|i| (0..=u64::MAX / 10u64.pow(3 * i as u32), Just(i)))) {
            let (suffix, power) = DECIMAL[i];
            let scale = 10u64.pow(power as u32);
            prop_assert_eq!(parse(Unit::Bytes, &format!("{n}{suffix}")), Ok(n * scale));
            prop_assert_eq!(parse(Unit::Count, &format!("{n}{suffix}")), Ok(n * scale));
        }
    }
}
