//! The JSON (exec) form of instructions, decoded exactly as BuildKit does it with Go's
//! `json.NewDecoder(...).Decode` into `[]interface{}`: strict RFC 8259 syntax for the first
//! value, anything after that value ignored (`CMD ["a"] b` is `["a"]`), nesting depth at most
//! 10000, invalid surrogate escapes become U+FFFD.
//!
//! Iterative (no recursion), linear time.

/// Outcome of trying to read text as a JSON array of strings.
#[derive(Debug, PartialEq)]
pub(crate) enum JsonArray {
    /// Not valid JSON (or not an array): BuildKit falls back to the shell form.
    NotJson,
    /// Valid JSON array with a non-string element at the given byte range: an error.
    NotStringArray { start: usize, end: usize },
    /// The decoded strings with their byte ranges (quotes included) in the input.
    Strings(Vec<(String, usize, usize)>),
}

const MAX_DEPTH: usize = 10_000;

fn is_ws(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r')
}

enum State {
    Value,
    ArrayFirst,
    ObjectFirst,
    ObjectKey,
    AfterValue,
}

/// Parses `text` (which must start with `[`, after BuildKit's left trim) as a JSON array.
pub(crate) fn parse_string_array(text: &str) -> JsonArray {
    let b = text.as_bytes();
    if b.first() != Some(&b'[') {
        return JsonArray::NotJson;
    }
    // true = array, false = object
    let mut stack: Vec<bool> = Vec::new();
    let mut pos = 0usize;
    let mut state = State::Value;
    let mut elems: Vec<(String, usize, usize)> = Vec::new();
    let mut first_bad: Option<(usize, usize)> = None;

    loop {
        while pos < b.len() && is_ws(b[pos]) {
            pos += 1;
        }
        match state {
            State::Value => {
                let Some(&c) = b.get(pos) else {
                    return JsonArray::NotJson;
                };
                let top_level_elem = stack.len() == 1 && stack[0];
                let start = pos;
                match c {
                    b'[' | b'{' => {
                        stack.push(c == b'[');
                        if stack.len() > MAX_DEPTH {
                            return JsonArray::NotJson;
                        }
                        pos += 1;
                        state = if c == b'[' {
                            State::ArrayFirst
                        } else {
                            State::ObjectFirst
                        };
                        if top_level_elem && first_bad.is_none() {
                            // the end is not known yet; use the opening bracket
                            first_bad = Some((start, start + 1));
                        }
                        continue;
                    }
                    b'"' => match scan_string(b, pos) {
                        Some((end, decoded)) => {
                            pos = end;
                            if top_level_elem {
                                elems.push((decoded, start, end));
                            }
                        }
                        None => return JsonArray::NotJson,
                    },
                    b't' | b'f' | b'n' => {
                        let lit: &[u8] = match c {
                            b't' => b"true",
                            b'f' => b"false",
                            _ => b"null",
                        };
                        if b[pos..].starts_with(lit) {
                            pos += lit.len();
                        } else {
                            return JsonArray::NotJson;
                        }
                        if top_level_elem && first_bad.is_none() {
                            first_bad = Some((start, pos));
                        }
                    }
                    b'-' | b'0'..=b'9' => match scan_number(b, pos) {
                        Some(end) => {
                            pos = end;
                            if top_level_elem && first_bad.is_none() {
                                first_bad = Some((start, pos));
                            }
                        }
                        None => return JsonArray::NotJson,
                    },
                    _ => return JsonArray::NotJson,
                }
                state = State::AfterValue;
            }
            State::ArrayFirst => {
                if b.get(pos) == Some(&b']') {
                    pos += 1;
                    stack.pop();
                    state = State::AfterValue;
                } else {
                    state = State::Value;
                }
            }
            State::ObjectFirst => {
                if b.get(pos) == Some(&b'}') {
                    pos += 1;
                    stack.pop();
                    state = State::AfterValue;
                } else {
                    state = State::ObjectKey;
                }
            }
            State::ObjectKey => {
                if b.get(pos) != Some(&b'"') {
                    return JsonArray::NotJson;
                }
                let Some((end, _)) = scan_string(b, pos) else {
                    return JsonArray::NotJson;
                };
                pos = end;
                while pos < b.len() && is_ws(b[pos]) {
                    pos += 1;
                }
                if b.get(pos) != Some(&b':') {
                    return JsonArray::NotJson;
                }
                pos += 1;
                state = State::Value;
            }
            State::AfterValue => {
                let Some(&is_array) = stack.last() else {
                    // top-level value complete: Go's Decoder stops here and never looks at
                    // what follows
                    break;
                };
                match b.get(pos) {
                    Some(b',') => {
                        pos += 1;
                        state = if is_array {
                            State::Value
                        } else {
                            State::ObjectKey
                        };
                    }
                    Some(b']') if is_array => {
                        pos += 1;
                        stack.pop();
                    }
                    Some(b'}') if !is_array => {
                        pos += 1;
                        stack.pop();
                    }
                    _ => return JsonArray::NotJson,
                }
            }
        }
    }
    match first_bad {
        Some((start, end)) => JsonArray::NotStringArray { start, end },
        None => JsonArray::Strings(elems),
    }
}

/// Scans a JSON number starting at `pos`; returns the end offset.
fn scan_number(b: &[u8], mut pos: usize) -> Option<usize> {
    if b.get(pos) == Some(&b'-') {
        pos += 1;
    }
    match b.get(pos) {
        Some(b'0') => pos += 1,
        Some(b'1'..=b'9') => {
            while matches!(b.get(pos), Some(b'0'..=b'9')) {
                pos += 1;
            }
        }
        _ => return None,
    }
    if b.get(pos) == Some(&b'.') {
        pos += 1;
        if !matches!(b.get(pos), Some(b'0'..=b'9')) {
            return None;
        }
        while matches!(b.get(pos), Some(b'0'..=b'9')) {
            pos += 1;
        }
    }
    if matches!(b.get(pos), Some(b'e' | b'E')) {
        pos += 1;
        if matches!(b.get(pos), Some(b'+' | b'-')) {
            pos += 1;
        }
        if !matches!(b.get(pos), Some(b'0'..=b'9')) {
            return None;
        }
        while matches!(b.get(pos), Some(b'0'..=b'9')) {
            pos += 1;
        }
    }
    Some(pos)
}

fn hex4(b: &[u8], pos: usize) -> Option<u32> {
    let s = b.get(pos..pos + 4)?;
    let mut v = 0u32;
    for &c in s {
        v = v * 16 + (c as char).to_digit(16)?;
    }
    Some(v)
}

/// Scans and decodes a JSON string starting at the `"` at `pos`; returns the offset after the
/// closing quote and the decoded text.
fn scan_string(b: &[u8], pos: usize) -> Option<(usize, String)> {
    let mut out: Vec<u8> = Vec::new();
    let mut i = pos + 1;
    loop {
        let c = *b.get(i)?;
        match c {
            b'"' => {
                let s = String::from_utf8(out)
                    .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned());
                return Some((i + 1, s));
            }
            b'\\' => {
                let e = *b.get(i + 1)?;
                i += 2;
                let simple = match e {
                    b'"' => Some(b'"'),
                    b'\\' => Some(b'\\'),
                    b'/' => Some(b'/'),
                    b'b' => Some(8),
                    b'f' => Some(12),
                    b'n' => Some(b'\n'),
                    b'r' => Some(b'\r'),
                    b't' => Some(b'\t'),
                    b'u' => None,
                    _ => return None,
                };
                if let Some(s) = simple {
                    out.push(s);
                    continue;
                }
                let r = hex4(b, i)?;
                i += 4;
                let ch = if (0xD800..0xE000).contains(&r) {
                    // a surrogate: valid only as a high+low pair
                    let low = if b.get(i) == Some(&b'\\') && b.get(i + 1) == Some(&b'u') {
                        hex4(b, i + 2)
                    } else {
                        None
                    };
                    match low {
                        Some(lo)
                            if (0xD800..0xDC00).contains(&r) && (0xDC00..0xE000).contains(&lo) =>
                        {
                            i += 6;
                            char::from_u32(0x10000 + ((r - 0xD800) << 10) + (lo - 0xDC00))
                                .unwrap_or('\u{fffd}')
                        }
                        _ => '\u{fffd}',
                    }
                } else {
                    char::from_u32(r).unwrap_or('\u{fffd}')
                };
                let mut buf = [0u8; 4];
                out.extend_from_slice(ch.encode_utf8(&mut buf).as_bytes());
            }
            c if c < 0x20 => return None,
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(t: &str) -> Vec<String> {
        match parse_string_array(t) {
            JsonArray::Strings(v) => v.into_iter().map(|(s, _, _)| s).collect(),
            other => panic!("{t}: {other:?}"),
        }
    }

    #[test]
    fn valid_arrays() {
        assert_eq!(strings("[]"), Vec::<String>::new());
        assert_eq!(strings("[ \"a\" , \"b\" ]  "), vec!["a", "b"]);
        assert_eq!(
            strings(r#"["\" \\ \/ \b \f \n \r \t \u0000"]"#),
            vec!["\" \\ / \u{8} \u{c} \n \r \t \0"]
        );
        assert_eq!(
            strings(r#"["\ud83d\ude00", "\ud800x"]"#),
            vec!["😀", "\u{fffd}x"]
        );
    }

    #[test]
    fn fallbacks_and_errors() {
        for t in [
            "['a']",
            "[\"a\"",
            "[\"a]",
            "[\"a\",]",
            "[\"a\tb\"]",
            "[01]",
            "[1.]",
            "[tru]",
            "[{\"a\" 1}]",
        ] {
            assert_eq!(parse_string_array(t), JsonArray::NotJson, "{t}");
        }
        for t in ["[1]", "[\"a\", [\"b\"]]", "[null]", "[{}]", "[\"a\", true]"] {
            assert!(
                matches!(parse_string_array(t), JsonArray::NotStringArray { .. }),
                "{t}"
            );
        }
    }

    #[test]
    fn trailing_text_after_the_array_is_ignored() {
        assert_eq!(strings("[\"a\"] b"), vec!["a"]);
        assert_eq!(strings("[\"a\"]]"), vec!["a"]);
        assert_eq!(strings("[\"a\"][1]"), vec!["a"]);
    }

    #[test]
    fn depth_limit_is_iterative() {
        let deep = "[".repeat(10_001) + &"]".repeat(10_001);
        assert_eq!(parse_string_array(&deep), JsonArray::NotJson);
        let ok = "[".repeat(10_000) + &"]".repeat(10_000);
        assert!(matches!(
            parse_string_array(&ok),
            JsonArray::NotStringArray { .. }
        ));
    }
}
