//! Redis's glob-style pattern matching (`stringmatchlen`), for KEYS and SCAN MATCH.
//!
//! `*` matches any run of bytes, `?` one byte, `[abc]`, `[^abc]` and `[a-z]` a byte in (or
//! out of) a set, and `\x` the byte x itself. Matching is over bytes, case-sensitive.
//!
//! The matcher is iterative, with one backtracking point (the last `*` seen): a mismatch
//! retries from that `*` with one more byte swallowed. That is exact for globs, whose only
//! variable-length wildcard is `*`, and bounds a match to |pattern| x |text| steps with
//! constant stack, whatever the pattern. Redis's recursive matcher can be driven into deep
//! recursion by a pattern such as `*a*a*a...`; this one cannot. A caller that matches many
//! keys for one request shares one step budget across them (`glob_match_within`), so that
//! one request cannot hold the node for long: when the budget runs out the request fails
//! with an error rather than silently dropping keys.

/// Steps `glob_match` allows one match: enough for any pattern against any key within the
/// size limits, used where a single match is made.
const GLOB_STEPS_ONE_MAX: u64 = u64::MAX;

/// True when `text` matches the glob `pattern`.
pub fn glob_match(pattern: &[u8], text: &[u8]) -> bool {
    let mut steps = GLOB_STEPS_ONE_MAX;
    glob_match_within(pattern, text, &mut steps).unwrap_or(false)
}

/// As `glob_match`, taking steps from `steps_left`; `None` when the budget ran out before
/// the answer was known.
pub fn glob_match_within(p: &[u8], t: &[u8], steps_left: &mut u64) -> Option<bool> {
    let (mut pi, mut ti) = (0, 0);
    // Where to resume after the last `*`: the pattern after it and the text it has swallowed.
    let mut star: Option<(usize, usize)> = None;
    loop {
        *steps_left = steps_left.checked_sub(1)?;
        if pi < p.len() {
            let advanced = match p[pi] {
                b'*' => {
                    star = Some((pi + 1, ti));
                    pi += 1;
                    continue;
                }
                b'?' if ti < t.len() => Some(1),
                b'[' if ti < t.len() => {
                    let (matched, rest) = match_class(&p[pi + 1..], t[ti]);
                    matched.then_some(p.len() - rest.len() - pi)
                }
                b'\\' if p.len() - pi >= 2 => (t.get(ti) == Some(&p[pi + 1])).then_some(2),
                c if c != b'?' && c != b'[' => (t.get(ti) == Some(&c)).then_some(1),
                _ => None,
            };
            if let Some(width) = advanced {
                pi += width;
                ti += 1;
                continue;
            }
        } else if ti == t.len() {
            return Some(true);
        }
        match star {
            Some((after, swallowed)) if swallowed < t.len() => {
                star = Some((after, swallowed + 1));
                pi = after;
                ti = swallowed + 1;
            }
            _ => return Some(false),
        }
    }
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
    use super::{glob_match, glob_match_within};

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
    fn hostile_pattern_is_bounded_in_time_and_stack() {
        let text = vec![b'a'; 64 * 1024];
        // 32k stars: a recursive matcher would nest 32k frames here.
        let pattern = b"*a".repeat(32 * 1024);
        let mut steps = 1_000_000;
        assert_eq!(glob_match_within(&pattern, &text, &mut steps), Some(true));
        let mut hostile = pattern.clone();
        hostile.push(b'b');
        let mut steps = 1_000_000;
        assert_eq!(glob_match_within(&hostile, &text, &mut steps), Some(false), "one backtrack point: linear here");
        let mut steps = 1000;
        assert_eq!(glob_match_within(&hostile, &text, &mut steps), None, "budget runs out: no silent false");
        assert!(!glob_match(b"*a*a*a*a*a*a*a*b", &text[..5000]));
    }

    #[test]
    fn budget_is_shared_and_counted() {
        let mut steps = 10;
        assert_eq!(glob_match_within(b"abc", b"abc", &mut steps), Some(true));
        assert!(steps < 10, "steps were taken");
        let mut none = 0;
        assert_eq!(glob_match_within(b"a", b"a", &mut none), None);
    }
}
