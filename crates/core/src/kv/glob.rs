//! Redis's glob-style pattern matching (`stringmatchlen`), for KEYS and SCAN MATCH.
//!
//! `*` matches any run of bytes, `?` one byte, `[abc]`, `[^abc]` and `[a-z]` a byte in (or
//! out of) a set, and `\x` the byte x itself. Matching is over bytes, case-sensitive.

/// The most nested `*` backtracking steps one match may take, so that a hostile pattern such
/// as `*a*a*a*a*b` against a long key cannot stall the node.
const GLOB_STEPS_MAX: usize = 1_000_000;

/// True when `text` matches the glob `pattern`. A pattern that exceeds `GLOB_STEPS_MAX`
/// backtracking steps does not match.
pub fn glob_match(pattern: &[u8], text: &[u8]) -> bool {
    let mut steps = 0;
    matches(pattern, text, &mut steps)
}

fn matches(mut p: &[u8], mut t: &[u8], steps: &mut usize) -> bool {
    while let Some(&c) = p.first() {
        *steps += 1;
        if *steps > GLOB_STEPS_MAX {
            return false;
        }
        match c {
            b'*' => {
                while p.first() == Some(&b'*') {
                    p = &p[1..];
                }
                if p.is_empty() {
                    return true;
                }
                return (0..=t.len()).any(|i| matches(p, &t[i..], steps));
            }
            b'?' => {
                if t.is_empty() {
                    return false;
                }
                p = &p[1..];
                t = &t[1..];
            }
            b'[' => {
                let Some((&byte, rest)) = t.split_first() else { return false };
                let (matched, after) = match_class(&p[1..], byte);
                if !matched {
                    return false;
                }
                p = after;
                t = rest;
            }
            _ => {
                let (literal, after) = if c == b'\\' && p.len() >= 2 { (p[1], &p[2..]) } else { (c, &p[1..]) };
                if t.first() != Some(&literal) {
                    return false;
                }
                p = after;
                t = &t[1..];
            }
        }
    }
    t.is_empty()
}

/// Matches `byte` against the class that starts at `p` (just after `[`); returns whether it
/// matched and the pattern after the closing `]` (or the end, for an unclosed class, as Redis).
fn match_class(mut p: &[u8], byte: u8) -> (bool, &[u8]) {
    let negate = p.first() == Some(&b'^');
    if negate {
        p = &p[1..];
    }
    let mut matched = false;
    loop {
        match p {
            [] => break,
            [b']', rest @ ..] => {
                p = rest;
                break;
            }
            [b'\\', c, rest @ ..] => {
                matched |= *c == byte;
                p = rest;
            }
            [lo, b'-', hi, rest @ ..] if *hi != b']' => {
                let (lo, hi) = if lo <= hi { (*lo, *hi) } else { (*hi, *lo) };
                matched |= (lo..=hi).contains(&byte);
                p = rest;
            }
            [c, rest @ ..] => {
                matched |= *c == byte;
                p = rest;
            }
        }
    }
    (matched != negate, p)
}

#[cfg(test)]
mod tests {
    use super::glob_match;

    #[test]
    fn table() {
        let table: &[(&str, &str, bool)] = &[
            ("*", "", true),
            ("*", "anything", true),
            ("h?llo", "hello", true),
            ("h?llo", "hllo", false),
            ("h*llo", "heeeello", true),
            ("h[ae]llo", "hallo", true),
            ("h[ae]llo", "hillo", false),
            ("h[^e]llo", "hallo", true),
            ("h[^e]llo", "hello", false),
            ("h[a-b]llo", "hbllo", true),
            ("h[b-a]llo", "hbllo", true),
            ("h[a-b]llo", "hcllo", false),
            ("users.*.name", "users.1234.name", true),
            ("users.*.name", "users.1234.picture_url", false),
            ("a\\*b", "a*b", true),
            ("a\\*b", "axb", false),
            ("[\\]]", "]", true),
            ("abc", "abcd", false),
            ("abc*", "abc", true),
            ("", "", true),
            ("", "a", false),
        ];
        for (pattern, text, want) in table {
            assert_eq!(glob_match(pattern.as_bytes(), text.as_bytes()), *want, "{pattern:?} vs {text:?}");
        }
    }

    #[test]
    fn hostile_pattern_is_bounded() {
        let text = vec![b'a'; 5000];
        assert!(!glob_match(b"*a*a*a*a*a*a*a*b", &text));
    }
}
