//! Glob patterns of policy actions and resources.
//!
//! `*` matches any run of characters (including none), `?` exactly one character, every
//! other character itself (case-sensitive). Patterns are compiled once: `*` alone, a
//! literal, `prefix*` and `*suffix` take fast paths; anything else runs the greedy
//! star-backtracking matcher, which is O(pattern × text) at worst (never exponential).

/// A compiled glob pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Glob {
    /// `*`: matches everything.
    Any,
    /// No wildcard: equality.
    Literal(Box<str>),
    /// `prefix*` with no other wildcard.
    Prefix(Box<str>),
    /// `*suffix` with no other wildcard.
    Suffix(Box<str>),
    /// Anything else.
    General(Box<str>),
}

fn is_wild(c: char) -> bool {
    c == '*' || c == '?'
}

impl Glob {
    /// Compiles `pattern`.
    pub(crate) fn new(pattern: &str) -> Glob {
        if !pattern.is_empty() && pattern.bytes().all(|b| b == b'*') {
            return Glob::Any;
        }
        let wildcards = pattern.chars().filter(|&c| is_wild(c)).count();
        match wildcards {
            0 => Glob::Literal(pattern.into()),
            1 if pattern.ends_with('*') => Glob::Prefix(pattern[..pattern.len() - 1].into()),
            1 if pattern.starts_with('*') => Glob::Suffix(pattern[1..].into()),
            _ => Glob::General(pattern.into()),
        }
    }

    /// Whether `text` matches.
    #[inline]
    pub(crate) fn matches(&self, text: &str) -> bool {
        match self {
            Glob::Any => true,
            Glob::Literal(lit) => &**lit == text,
            Glob::Prefix(prefix) => text.starts_with(&**prefix),
            Glob::Suffix(suffix) => text.ends_with(&**suffix),
            Glob::General(pattern) => matches(pattern, text),
        }
    }
}

/// Length of the UTF-8 sequence that starts with `lead` (a character boundary).
#[inline]
fn char_len(lead: u8) -> usize {
    match lead {
        0x00..=0x7f => 1,
        0xc0..=0xdf => 2,
        0xe0..=0xef => 3,
        _ => 4,
    }
}

/// Whether `text` matches the uncompiled `pattern` (greedy star-backtracking: on a mismatch
/// the last `*` absorbs one more character of the text and matching resumes after it).
pub(crate) fn matches(pattern: &str, text: &str) -> bool {
    let p = pattern.as_bytes();
    let t = text.as_bytes();
    let (mut pi, mut ti) = (0usize, 0usize);
    // (pattern index just after the last `*`, text index that `*` has absorbed up to).
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if let Some(&pc) = p.get(pi) {
            match pc {
                b'*' => {
                    pi += 1;
                    star = Some((pi, ti));
                    continue;
                }
                // `ti` is always on a character boundary: `?` consumes one whole character.
                b'?' => {
                    pi += 1;
                    ti += char_len(t[ti]);
                    continue;
                }
                _ if pc == t[ti] => {
                    pi += 1;
                    ti += 1;
                    continue;
                }
                _ => {}
            }
        }
        match star {
            Some((sp, st)) => {
                let next = st + char_len(t[st]);
                star = Some((sp, next));
                pi = sp;
                ti = next;
            }
            None => return false,
        }
    }
    p[pi..].iter().all(|&b| b == b'*')
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reference matcher (exponential, tiny inputs only) over characters.
    fn reference(p: &[char], t: &[char]) -> bool {
        match p.split_first() {
            None => t.is_empty(),
            Some(('*', rest)) => (0..=t.len()).any(|k| reference(rest, &t[k..])),
            Some(('?', rest)) => !t.is_empty() && reference(rest, &t[1..]),
            Some((c, rest)) => t.first() == Some(c) && reference(rest, &t[1..]),
        }
    }

    fn both(pattern: &str, text: &str) -> bool {
        let compiled = Glob::new(pattern).matches(text);
        let general = matches(pattern, text);
        assert_eq!(compiled, general, "pattern {pattern:?} text {text:?}");
        let p: Vec<char> = pattern.chars().collect();
        let t: Vec<char> = text.chars().collect();
        assert_eq!(general, reference(&p, &t), "pattern {pattern:?} text {text:?}");
        general
    }

    #[test]
    fn compiles_to_fast_paths() {
        assert_eq!(Glob::new("*"), Glob::Any);
        assert_eq!(Glob::new("**"), Glob::Any);
        assert_eq!(Glob::new("message:read"), Glob::Literal("message:read".into()));
        assert_eq!(Glob::new("message:*"), Glob::Prefix("message:".into()));
        assert_eq!(Glob::new("*:read"), Glob::Suffix(":read".into()));
        assert_eq!(Glob::new("m?ssage:*"), Glob::General("m?ssage:*".into()));
        assert_eq!(Glob::new("dialog/*/x"), Glob::General("dialog/*/x".into()));
        assert_eq!(Glob::new(""), Glob::Literal("".into()));
    }

    #[test]
    fn wildcards() {
        assert!(both("*", ""));
        assert!(both("*", "anything/at all"));
        assert!(both("message:*", "message:read"));
        assert!(both("message:*", "message:"));
        assert!(!both("message:*", "messages:read"));
        assert!(both("*:read", "dialog:read"));
        assert!(!both("*:read", "dialog:reads"));
        assert!(both("dialog/*", "dialog/42"));
        assert!(!both("dialog/*", "dialogs/42"));
        assert!(both("dialog/?", "dialog/4"));
        assert!(!both("dialog/?", "dialog/42"));
        assert!(!both("dialog/?", "dialog/"));
        assert!(both("dialog/??", "dialog/42"));
        assert!(both("*/1", "user/1"));
        assert!(both("d*g/*1", "dialog/2021"));
        assert!(!both("d*g/*1", "dialog/2022"));
        assert!(both("a*b*c", "abc"));
        assert!(both("a*b*c", "aXXbYYbZZc"));
        assert!(!both("a*b*c", "aXXbYYcZZ"));
        assert!(both("*a*", "bab"));
        assert!(both("*?", "x"));
        assert!(!both("*?", ""));
        assert!(both("user:read", "user:read"));
        assert!(!both("user:read", "user:Read"), "case-sensitive");
        assert!(!both("user:read", "user:rea"));
        assert!(!both("", "x"));
        assert!(both("", ""));
    }

    #[test]
    fn question_mark_is_one_character_not_one_byte() {
        assert!(both("dialog/?", "dialog/é"));
        assert!(both("dialog/?", "dialog/😀"));
        assert!(!both("dialog/??", "dialog/é"));
        assert!(both("*?x", "éé😀x"));
        assert!(both("?*é", "aé"));
    }

    #[test]
    fn exhaustive_small_against_reference() {
        let alphabet = ['a', 'b', '*', '?'];
        let texts = ["", "a", "b", "ab", "ba", "aab", "abab", "bbba", "aaaa", "abba"];
        let mut patterns = vec![String::new()];
        for _ in 0..4 {
            let mut next = Vec::new();
            for p in &patterns {
                for c in alphabet {
                    next.push(format!("{p}{c}"));
                }
            }
            patterns.extend(next);
            patterns.sort();
            patterns.dedup();
        }
        for p in &patterns {
            for t in texts {
                both(p, t);
            }
        }
    }

    #[test]
    fn pathological_pattern_is_fast() {
        let pattern = format!("{}b", "a*".repeat(30));
        let text = "a".repeat(5_000);
        let start = std::time::Instant::now();
        assert!(!matches(&pattern, &text));
        assert!(start.elapsed() < std::time::Duration::from_secs(2));
    }
}
