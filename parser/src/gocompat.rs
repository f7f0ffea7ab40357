//! Small re-implementations of Go standard-library behaviour that BuildKit's output depends on:
//! `unicode.IsSpace/IsLetter/IsDigit`, `strings.TrimSpace/ToLower`, `strconv.Quote` and
//! `strconv.ParseBool`.

use unicode_properties::{GeneralCategory, GeneralCategoryGroup, UnicodeGeneralCategory};

/// Go's `unicode.IsSpace`: the Unicode `White_Space` property (same set as Rust's).
pub(crate) fn is_space(c: char) -> bool {
    c.is_whitespace()
}

/// Go's `unicode.IsSpace(rune(b))` for an ASCII byte; bytes >= 0x80 are treated as non-space
/// (BuildKit scans some text byte-wise; Lade keeps multi-byte characters intact).
pub(crate) fn is_space_byte(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r')
}

/// The `[\t\v\f\r ]` class of BuildKit's `reWhitespace`/`tokenWhitespace` regexes.
pub(crate) fn is_token_space(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\x0b' | '\x0c' | '\r')
}

/// Go's `unicode.IsLetter`: general category L.
pub(crate) fn is_letter(c: char) -> bool {
    if c.is_ascii() {
        return c.is_ascii_alphabetic();
    }
    c.general_category_group() == GeneralCategoryGroup::Letter
}

/// Go's `unicode.IsDigit`: general category Nd.
pub(crate) fn is_digit(c: char) -> bool {
    if c.is_ascii() {
        return c.is_ascii_digit();
    }
    c.general_category() == GeneralCategory::DecimalNumber
}

/// Go's `strconv.IsPrint`: categories L, M, N, P, S and the ASCII space.
pub(crate) fn is_print(c: char) -> bool {
    if c.is_ascii() {
        return (' '..='~').contains(&c);
    }
    matches!(
        c.general_category_group(),
        GeneralCategoryGroup::Letter
            | GeneralCategoryGroup::Mark
            | GeneralCategoryGroup::Number
            | GeneralCategoryGroup::Punctuation
            | GeneralCategoryGroup::Symbol
    )
}

/// Go's `strings.TrimSpace`.
pub(crate) fn trim_space(s: &str) -> &str {
    s.trim_matches(is_space)
}

/// Go's `strings.ToLower` (rune by rune, without context-dependent mappings).
pub(crate) fn to_lower(s: &str) -> String {
    if s.is_ascii() {
        return s.to_ascii_lowercase();
    }
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        let mut lower = c.to_lowercase();
        // Go maps one rune to one rune; Rust's full mapping of U+0130 has two.
        if lower.len() == 1 {
            out.extend(lower);
        } else {
            out.push(lower.next().unwrap_or(c));
        }
    }
    out
}

/// Go's `strconv.Quote`: a double-quoted string with Go escapes, as used by BuildKit's dump.
pub fn go_quote(s: &str) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if is_print(c) => out.push(c),
            '\x07' => out.push_str("\\a"),
            '\x08' => out.push_str("\\b"),
            '\x0c' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\x0b' => out.push_str("\\v"),
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                let b = c as u32;
                out.push_str("\\x");
                out.push(HEX[(b >> 4) as usize & 0xf] as char);
                out.push(HEX[b as usize & 0xf] as char);
            }
            c if (c as u32) < 0x10000 => {
                out.push_str("\\u");
                let r = c as u32;
                for shift in [12, 8, 4, 0] {
                    out.push(HEX[(r >> shift) as usize & 0xf] as char);
                }
            }
            c => {
                out.push_str("\\U");
                let r = c as u32;
                for shift in [28, 24, 20, 16, 12, 8, 4, 0] {
                    out.push(HEX[(r >> shift) as usize & 0xf] as char);
                }
            }
        }
    }
    out.push('"');
    out
}

/// Go's `fmt.Sprintf("%q", []string{...})`: `["a" "b"]`.
pub(crate) fn go_quote_slice<'a>(items: impl IntoIterator<Item = &'a str>) -> String {
    let mut out = String::from("[");
    for (i, item) in items.into_iter().enumerate() {
        if i > 0 {
            out.push(' ');
        }
        out.push_str(&go_quote(item));
    }
    out.push(']');
    out
}

/// Go's `strconv.ParseBool`.
pub(crate) fn parse_bool(s: &str) -> Option<bool> {
    match s {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
}

/// Go's `strconv.ParseUint(s, base, 32)`: digits only (an optional `0o`/`0x` prefix is not
/// accepted with an explicit base), no sign, value must fit in 32 bits.
pub(crate) fn parse_u32(s: &str, radix: u32) -> Option<u32> {
    if s.is_empty() || s.starts_with('+') || s.starts_with('-') {
        return None;
    }
    u32::from_str_radix(s, radix).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quote_matches_go() {
        assert_eq!(go_quote("a\"b\\c"), r#""a\"b\\c""#);
        assert_eq!(go_quote("\0\x07\x1b\x7f"), r#""\x00\a\x1b\x7f""#);
        assert_eq!(go_quote("☥ ☃ 한국어"), "\"☥ ☃ 한국어\"");
        assert_eq!(go_quote("\u{a0}\u{ad}\u{200b}"), r#""\u00a0\u00ad\u200b""#);
        assert_eq!(go_quote("\u{85}"), r#""\u0085""#);
        assert_eq!(go_quote("\u{e0000}x"), r#""\U000e0000x""#);
        assert_eq!(go_quote_slice(["--a=b", "--c"]), r#"["--a=b" "--c"]"#);
    }

    #[test]
    fn categories() {
        assert!(is_letter('é') && is_letter('한') && !is_letter('1') && !is_letter('_'));
        assert!(is_digit('٣') && !is_digit('½') && !is_digit('a'));
        assert!(is_space('\u{85}') && is_space('\u{a0}') && is_space('\x0b'));
        assert_eq!(to_lower("RuN"), "run");
        assert_eq!(to_lower("ÉCOLE"), "école");
    }
}
