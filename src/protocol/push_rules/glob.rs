//! Glob matching for push rules: `*` matches any run of characters, `?`
//! exactly one, case-insensitively; either over the whole value or over any
//! substring that starts and ends at a word boundary (the `content.body` rule).
//!
//! Spec: <https://spec.matrix.org/latest/appendices/#glob-style-matching>,
//! <https://spec.matrix.org/latest/client-server-api/#conditions-1> (word boundaries).
//!
//! The matcher is a small NFA run once over the value, so matching costs
//! `O(value × pattern)` with no backtracking blow-up.

/// One element of a compiled pattern.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Token {
    Char(char),
    /// `?`: exactly one character.
    One,
    /// `*`: zero or more characters.
    Any,
}

/// Where a match may start and end.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Span {
    /// The pattern must match the entire value.
    Whole,
    /// The pattern must match some substring bounded by word boundaries.
    Words,
}

/// Spec: a word boundary is the start or end of the value, or any character
/// not in `[A-Z]`, `[a-z]`, `[0-9]` or `_`.
fn is_word_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

fn compile(pattern: &str, literal: bool) -> Vec<Token> {
    pattern
        .to_lowercase()
        .chars()
        .map(|c| match c {
            '*' if !literal => Token::Any,
            '?' if !literal => Token::One,
            other => Token::Char(other),
        })
        .collect()
}

/// Whether the glob `pattern` matches the whole of `value`.
pub fn matches_whole(pattern: &str, value: &str) -> bool {
    run(&compile(pattern, false), value, Span::Whole)
}

/// Whether the glob `pattern` matches a substring of `value` that starts and
/// ends at word boundaries.
pub fn matches_words(pattern: &str, value: &str) -> bool {
    run(&compile(pattern, false), value, Span::Words)
}

/// Whether `text` (taken literally, `*` and `?` included) occurs in `value`
/// bounded by word boundaries. An empty `text` never matches.
pub fn contains_words(text: &str, value: &str) -> bool {
    !text.is_empty() && run(&compile(text, true), value, Span::Words)
}

fn run(tokens: &[Token], value: &str, span: Span) -> bool {
    let chars: Vec<char> = value.to_lowercase().chars().collect();
    let accept = tokens.len();
    // active[k]: the first k tokens have matched the text just before the
    // current position, for some allowed start.
    let mut active = vec![false; accept + 1];
    let mut next = vec![false; accept + 1];
    for position in 0..=chars.len() {
        let may_start = match span {
            Span::Whole => position == 0,
            Span::Words => position == 0 || !is_word_char(chars[position - 1]),
        };
        if may_start {
            active[0] = true;
        }
        // `*` may match nothing: let every active `*` pass on to what follows.
        for index in 0..accept {
            if active[index] && tokens[index] == Token::Any {
                active[index + 1] = true;
            }
        }
        let may_end = match span {
            Span::Whole => position == chars.len(),
            Span::Words => position == chars.len() || !is_word_char(chars[position]),
        };
        if active[accept] && may_end {
            return true;
        }
        let Some(&c) = chars.get(position) else { break };
        next.iter_mut().for_each(|state| *state = false);
        let mut any_active = false;
        for index in 0..accept {
            if !active[index] {
                continue;
            }
            match tokens[index] {
                Token::Char(expected) if expected == c => next[index + 1] = true,
                Token::Char(_) => continue,
                Token::One => next[index + 1] = true,
                Token::Any => next[index] = true,
            }
            any_active = true;
        }
        std::mem::swap(&mut active, &mut next);
        if !any_active && span == Span::Whole {
            return false;
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whole_value_globs() {
        let cases = [
            // The spec's `content.topic` example.
            ("lunc?*", "Lunch plans", true),
            ("lunc?*", "LUNCH", true),
            ("lunc?*", " lunch", false),
            ("lunc?*", "lunc", false),
            ("m.notice", "m.notice", true),
            ("m.notice", "m.notices", false),
            ("*", "", true),
            ("", "", true),
            ("", "x", false),
            ("a*b*c", "aXXbYYc", true),
            ("a*b*c", "aXXbYY", false),
            ("@alice:example.org", "@ALICE:example.org", true),
        ];
        for (pattern, value, expected) in cases {
            assert_eq!(matches_whole(pattern, value), expected, "{pattern:?} on {value:?}");
        }
    }

    #[test]
    fn body_globs_match_between_word_boundaries() {
        let cases = [
            // The spec's `content.body` examples.
            ("ex*ple", "An example event.", true),
            ("ex*ple", "exple", true),
            ("ex*ple", "An exciting triple-whammy", true),
            ("cake", "I like cake!", true),
            ("cake", "I like cakes", false),
            ("cake", "pancake", false),
            ("cake", "cake_walk", false),
            ("cake*lie", "the cake is a lie", true),
            ("tea", "It's time for TEA", true),
            ("@room", "hey @room look", true),
            ("@room", "x@room", false),
            ("?", "a b", true),
        ];
        for (pattern, body, expected) in cases {
            assert_eq!(matches_words(pattern, body), expected, "{pattern:?} in {body:?}");
        }
    }

    #[test]
    fn literal_names_ignore_glob_characters() {
        assert!(contains_words("Alice*", "hi alice* there"));
        assert!(!contains_words("Alice*", "hi alicebob"));
        assert!(contains_words("Alice Cooper", "ping alice cooper."));
        assert!(!contains_words("", "anything"));
    }
}
