//! The one glob matcher: `*` matches any run of characters and, where the
//! caller's syntax has it, `?` exactly one; case-sensitively or not; over a
//! whole value or over any substring bounded by word boundaries. Used by
//! sync filters, server ACLs and push rules, each with the syntax its spec
//! section gives. Pure: no I/O, no knowledge of what is matched.
//!
//! Spec: <https://spec.matrix.org/latest/appendices/#glob-style-matching>.
//!
//! Patterns and values are input from anyone, so nothing here recurses or
//! backtracks: a run of `*` is one token, and
//! - a whole-value match checks the part before the first `*` as a prefix and
//!   the part after the last `*` as a suffix, then finds each part between
//!   them leftmost, in order (taking the leftmost is always safe, the `*`
//!   after it absorbs the rest). Each part is found by a bit-parallel
//!   shift-and scan, and the scans together read the value once, so a match
//!   costs `O(value × ⌈part / 64⌉ + pattern)`;
//! - a word-bounded search runs an NFA once over the value, with a sparse
//!   set of live states: `O(value × live states)`, at most `value × pattern`.
//!
//! Callers bound the pattern length.

/// How a pattern is read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Syntax {
    /// Whether `?` is a wildcard for exactly one character (else a literal).
    pub question_mark: bool,
    /// Whether letters match whatever their case (Unicode lower-casing of
    /// both pattern and value).
    pub ignore_case: bool,
}

/// Sync filter `types`/`not_types`: `*` only, case-sensitive.
/// Spec: <https://spec.matrix.org/latest/client-server-api/#filtering>
/// ("A '*' can be used as a wildcard to match any sequence of characters").
pub const FILTER: Syntax = Syntax { question_mark: false, ignore_case: false };

/// `m.room.server_acl` `allow`/`deny`: `*` and `?`, server names compared
/// case-insensitively (host names are).
/// Spec: <https://spec.matrix.org/latest/client-server-api/#mroomserver_acl>.
pub const SERVER_ACL: Syntax = Syntax { question_mark: true, ignore_case: true };

/// Push rule `event_match` patterns: `*` and `?`, case-insensitive.
/// Spec: <https://spec.matrix.org/latest/client-server-api/#conditions-1>.
pub const PUSH_RULE: Syntax = Syntax { question_mark: true, ignore_case: true };

/// One element of a compiled pattern.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Token {
    Char(char),
    /// `?`: exactly one character.
    One,
    /// `*` (or a run of them): zero or more characters.
    Any,
}

/// A compiled pattern.
#[derive(Clone, Debug)]
pub struct Glob {
    tokens: Vec<Token>,
    ignore_case: bool,
    /// How many characters any match covers at least (tokens but `*`).
    min_chars: usize,
    /// The runs of tokens between `*`s (the first before any `*`, the last
    /// after every `*`; one run when there is no `*`).
    parts: Vec<std::ops::Range<usize>>,
    /// A finder for each part strictly between the first and the last.
    finders: Vec<Finder>,
}

impl Glob {
    /// Compiles `pattern` read with `syntax`. Never fails: any string is a
    /// pattern. A run of `*` becomes one token, so `*****` costs what `*` does.
    pub fn new(pattern: &str, syntax: Syntax) -> Glob {
        Glob::compile(pattern, syntax.ignore_case, |c| match c {
            '*' => Token::Any,
            '?' if syntax.question_mark => Token::One,
            other => Token::Char(other),
        })
    }

    /// A pattern matching `text` literally (no wildcards at all).
    pub fn literal(text: &str, ignore_case: bool) -> Glob {
        Glob::compile(text, ignore_case, Token::Char)
    }

    fn compile(pattern: &str, ignore_case: bool, token: impl Fn(char) -> Token) -> Glob {
        let mut tokens: Vec<Token> = Vec::with_capacity(pattern.len());
        for c in chars_of(pattern, ignore_case) {
            let next = token(c);
            if next == Token::Any && tokens.last() == Some(&Token::Any) {
                continue;
            }
            tokens.push(next);
        }
        let min_chars = tokens.iter().filter(|token| **token != Token::Any).count();
        let mut parts = Vec::new();
        let mut start = 0;
        for (index, token) in tokens.iter().enumerate() {
            if *token == Token::Any {
                parts.push(start..index);
                start = index + 1;
            }
        }
        parts.push(start..tokens.len());
        let middle = parts.get(1..parts.len().saturating_sub(1)).unwrap_or_default();
        let finders =
            middle.iter().map(|part| Finder::new(tokens.get(part.clone()).unwrap_or_default())).collect();
        Glob { tokens, ignore_case, min_chars, parts, finders }
    }

    fn part(&self, index: usize) -> &[Token] {
        self.parts.get(index).and_then(|part| self.tokens.get(part.clone())).unwrap_or_default()
    }

    /// Whether the pattern matches the whole of `value`.
    pub fn matches(&self, value: &str) -> bool {
        let text = chars_of(value, self.ignore_case);
        if text.len() < self.min_chars {
            return false;
        }
        let first = self.part(0);
        if self.parts.len() == 1 {
            return first.len() == text.len() && fits(first, &text);
        }
        let last = self.part(self.parts.len() - 1);
        // `min_chars` covers both, so neither slice can fail.
        let end = text.len() - last.len();
        if !fits(first, &text) || !text.get(end..).is_some_and(|tail| fits(last, tail)) {
            return false;
        }
        let Some(between) = text.get(..end) else { return false };
        let mut position = first.len();
        for finder in &self.finders {
            match finder.find(between, position) {
                Some(found_end) => position = found_end,
                None => return false,
            }
        }
        true
    }

    /// Whether the pattern matches a substring of `value` that starts and
    /// ends at word boundaries: the start or end of the value, or next to a
    /// character not in `[A-Za-z0-9_]`.
    ///
    /// Spec: <https://spec.matrix.org/latest/client-server-api/#conditions-1>
    /// (`event_match` on `content.body`).
    pub fn matches_words(&self, value: &str) -> bool {
        let text = chars_of(value, self.ignore_case);
        if text.len() < self.min_chars {
            return false;
        }
        let tokens = &self.tokens;
        let accept = tokens.len();
        let is_boundary_char = |position: usize| text.get(position).is_none_or(|c| !is_word_char(*c));
        // The NFA states alive just before the current position: state k
        // means the first k tokens matched, from some allowed start. Sets are
        // sparse, so a step costs what is alive, not the pattern's length.
        let mut active = StateSet::new(accept + 1);
        let mut next = StateSet::new(accept + 1);
        for position in 0..=text.len() {
            if position.checked_sub(1).is_none_or(is_boundary_char) {
                active.insert(0);
            }
            // `*` may match nothing: every active `*` passes on to what
            // follows. The set grows while it is walked, which covers chains.
            let mut index = 0;
            while let Some(&state) = active.members.get(index) {
                if tokens.get(state) == Some(&Token::Any) {
                    active.insert(state + 1);
                }
                index += 1;
            }
            if active.contains(accept) && is_boundary_char(position) {
                return true;
            }
            let Some(&c) = text.get(position) else { break };
            next.clear();
            for &state in &active.members {
                match tokens.get(state) {
                    Some(Token::Char(expected)) if *expected == c => next.insert(state + 1),
                    Some(Token::One) => next.insert(state + 1),
                    Some(Token::Any) => next.insert(state),
                    Some(Token::Char(_)) | None => {}
                }
            }
            std::mem::swap(&mut active, &mut next);
        }
        false
    }
}

/// A set of NFA states below a bound: its members in insertion order, and a
/// mark per state saying which generation of the set holds it (so clearing
/// is O(members), not O(bound)).
struct StateSet {
    members: Vec<usize>,
    marks: Vec<usize>,
    generation: usize,
}

impl StateSet {
    fn new(bound: usize) -> StateSet {
        StateSet { members: Vec::new(), marks: vec![0; bound], generation: 1 }
    }

    fn contains(&self, state: usize) -> bool {
        self.marks.get(state) == Some(&self.generation)
    }

    fn insert(&mut self, state: usize) {
        if let Some(mark) = self.marks.get_mut(state) {
            if *mark != self.generation {
                *mark = self.generation;
                self.members.push(state);
            }
        }
    }

    fn clear(&mut self) {
        self.members.clear();
        self.generation += 1;
    }
}

/// Whether `part` (no `*`) matches the start of `text`.
fn fits(part: &[Token], text: &[char]) -> bool {
    part.len() <= text.len()
        && part.iter().zip(text).all(|(token, c)| match token {
            Token::Char(expected) => expected == c,
            Token::One => true,
            Token::Any => false,
        })
}

/// Finds a run of tokens without `*` in a text: shift-and, one bit per
/// token, so a scan costs `O(text × ⌈tokens / 64⌉)` and never backtracks.
#[derive(Clone, Debug)]
struct Finder {
    len: usize,
    /// The positions of `?` (they take any character).
    any_char: Vec<u64>,
    /// For each character in the run, sorted: the positions it (or `?`) takes.
    by_char: Vec<(char, Vec<u64>)>,
}

impl Finder {
    fn new(tokens: &[Token]) -> Finder {
        let words = tokens.len().div_ceil(64);
        let mut chars: Vec<char> = tokens
            .iter()
            .filter_map(|token| match token {
                Token::Char(c) => Some(*c),
                _ => None,
            })
            .collect();
        chars.sort_unstable();
        chars.dedup();
        let mut any_char = vec![0; words];
        let mut by_char: Vec<(char, Vec<u64>)> = chars.into_iter().map(|c| (c, vec![0; words])).collect();
        for (index, token) in tokens.iter().enumerate() {
            let (word, bit) = (index / 64, 1u64 << (index % 64));
            let mask = match token {
                Token::One => Some(&mut any_char),
                Token::Char(c) => by_char
                    .binary_search_by(|(known, _)| known.cmp(c))
                    .ok()
                    .and_then(|at| by_char.get_mut(at))
                    .map(|(_, mask)| mask),
                Token::Any => None,
            };
            if let Some(slot) = mask.and_then(|mask| mask.get_mut(word)) {
                *slot |= bit;
            }
        }
        for (_, mask) in &mut by_char {
            mask.iter_mut().zip(&any_char).for_each(|(slot, any)| *slot |= any);
        }
        Finder { len: tokens.len(), any_char, by_char }
    }

    /// The end of the leftmost occurrence starting at or after `from`.
    fn find(&self, text: &[char], from: usize) -> Option<usize> {
        if self.len == 0 {
            return Some(from);
        }
        let (last_word, last_bit) = ((self.len - 1) / 64, 1u64 << ((self.len - 1) % 64));
        // Bit i of `state`: the first i + 1 tokens match the text ending here.
        let mut state = vec![0u64; self.any_char.len()];
        for (offset, c) in text.get(from..)?.iter().enumerate() {
            let mask = match self.by_char.binary_search_by(|(known, _)| known.cmp(c)) {
                Ok(at) => self.by_char.get(at).map_or(&self.any_char, |(_, mask)| mask),
                Err(_) => &self.any_char,
            };
            let mut carry = 1;
            for (word, allowed) in state.iter_mut().zip(mask) {
                let next_carry = *word >> 63;
                *word = ((*word << 1) | carry) & allowed;
                carry = next_carry;
            }
            if state.get(last_word).is_some_and(|word| word & last_bit != 0) {
                return Some(from + offset + 1);
            }
        }
        None
    }
}

/// Spec: a word character is one of `[A-Z]`, `[a-z]`, `[0-9]` or `_`.
fn is_word_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// The characters of `text`, lower-cased when case is ignored.
fn chars_of(text: &str, ignore_case: bool) -> Vec<char> {
    if !ignore_case {
        return text.chars().collect();
    }
    let mut chars = Vec::with_capacity(text.len());
    for c in text.chars() {
        if c.is_ascii() {
            chars.push(c.to_ascii_lowercase());
        } else {
            chars.extend(c.to_lowercase());
        }
    }
    chars
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    fn whole(pattern: &str, syntax: Syntax, value: &str) -> bool {
        Glob::new(pattern, syntax).matches(value)
    }

    #[test]
    fn filter_globs_are_star_only_and_case_sensitive() {
        let cases = [
            ("m.*", "m.room.message", true),
            ("*", "anything", true),
            ("*", "", true),
            ("m.room.*age", "m.room.message", true),
            ("m.room.*", "org.example", false),
            ("m.room.message", "m.room.message", true),
            ("m.room.message", "m.room.messages", false),
            ("M.room.message", "m.room.message", false),
            ("m.room.?essage", "m.room.message", false),
            ("m.room.?essage", "m.room.?essage", true),
            ("*.*", "m.room", true),
            ("a*b*c", "abc", true),
            ("a*b*c", "aXbYbZc", true),
            ("a*b*c", "aXbYcZ", false),
            ("", "", true),
            ("", "x", false),
            ("*é*", "café!", true),
        ];
        for (pattern, value, expected) in cases {
            assert_eq!(whole(pattern, FILTER, value), expected, "{pattern:?} on {value:?}");
        }
    }

    #[test]
    fn acl_and_push_globs_know_question_marks_and_ignore_case() {
        let cases = [
            ("?.example", "a.example", true),
            ("?.example", "ab.example", false),
            ("?.example", ".example", false),
            ("LOCALHOST", "localhost", true),
            ("*.EVIL.example", "sub.evil.EXAMPLE", true),
            ("lunc?*", "Lunch plans", true),
            ("lunc?*", "lunc", false),
            ("a?c*", "ABCDEF", true),
            ("*?", "", false),
            ("*?", "x", true),
            ("?*?", "x", false),
        ];
        for (pattern, value, expected) in cases {
            assert_eq!(whole(pattern, SERVER_ACL, value), expected, "{pattern:?} on {value:?}");
        }
    }

    #[test]
    fn word_bounded_matches() {
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
            ("?", "a b", true),
            ("", "", true),
        ];
        for (pattern, body, expected) in cases {
            assert_eq!(
                Glob::new(pattern, PUSH_RULE).matches_words(body),
                expected,
                "{pattern:?} in {body:?}"
            );
        }
        assert!(Glob::literal("Alice*", true).matches_words("hi alice* there"));
        assert!(!Glob::literal("Alice*", true).matches_words("hi alicebob"));
    }

    /// Patterns that make a backtracking matcher take exponential time (or
    /// a recursive one overflow its stack) finish at once.
    #[test]
    fn pathological_patterns_finish_at_once() {
        let many_a = "a".repeat(200);
        let long_text = "a".repeat(100_000);
        let stars = "*".repeat(500_000);
        let started = Instant::now();
        assert!(!whole("************Z", FILTER, "m.room.message.with.a.long.type"));
        assert!(!whole("*a*a*a*a*a*a*a*a*b", SERVER_ACL, &format!("@v:{many_a}.example")));
        assert!(!whole(&format!("{stars}Z"), FILTER, &many_a));
        assert!(whole(&stars, FILTER, &many_a));
        assert!(!whole(&format!("*{}b", "a".repeat(50)), FILTER, &many_a));
        assert!(!Glob::new("*a*a*a*a*a*a*a*a*b", PUSH_RULE).matches_words(&many_a));
        assert!(!Glob::new(&format!("{stars}Z"), PUSH_RULE).matches_words(&long_text));
        assert!(!whole("*?*?*?*?*?*?*?*?b", SERVER_ACL, &long_text));
        let elapsed = started.elapsed();
        // A backtracking matcher takes minutes (or overflows its stack) here;
        // this one takes milliseconds (mostly reading the 500,000 `*`s in a
        // debug build). The bound leaves room for a loaded machine.
        assert!(elapsed < Duration::from_secs(3), "took {elapsed:?}");
    }

    /// The textbook dynamic program, as a reference: `table[i][j]` says
    /// whether the first `i` pattern characters match the first `j` text ones.
    fn reference(pattern: &[char], text: &[char]) -> bool {
        let mut table = vec![vec![false; text.len() + 1]; pattern.len() + 1];
        table[0][0] = true;
        for i in 1..=pattern.len() {
            for j in 0..=text.len() {
                table[i][j] = match pattern[i - 1] {
                    '*' => table[i - 1][j] || (j > 0 && table[i][j - 1]),
                    '?' => j > 0 && table[i - 1][j - 1],
                    c => j > 0 && text[j - 1] == c && table[i - 1][j - 1],
                };
            }
        }
        table[pattern.len()][text.len()]
    }

    /// The word-bounded reference: some substring between boundaries matches.
    fn reference_words(pattern: &[char], text: &[char]) -> bool {
        let boundary_before = |at: usize| at == 0 || !is_word_char(text[at - 1]);
        let boundary_after = |at: usize| at == text.len() || !is_word_char(text[at]);
        (0..=text.len()).any(|start| {
            (start..=text.len()).any(|end| {
                boundary_before(start) && boundary_after(end) && reference(pattern, &text[start..end])
            })
        })
    }

    /// Random small patterns and values (a fixed-seed generator, so the test
    /// is deterministic) agree with the references.
    #[test]
    fn agrees_with_the_textbook_matcher() {
        let mut seed: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut next = move |bound: u64| {
            seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
            (seed >> 33) % bound
        };
        for _ in 0..20_000 {
            let pattern: String = (0..next(9)).map(|_| ['a', 'b', '*', '?', ' '][next(5) as usize]).collect();
            let text: String = (0..next(12)).map(|_| ['a', 'b', ' '][next(3) as usize]).collect();
            let (pattern_chars, text_chars): (Vec<char>, Vec<char>) =
                (pattern.chars().collect(), text.chars().collect());
            let glob = Glob::new(&pattern, PUSH_RULE);
            assert_eq!(
                glob.matches(&text),
                reference(&pattern_chars, &text_chars),
                "{pattern:?} on {text:?}"
            );
            assert_eq!(
                glob.matches_words(&text),
                reference_words(&pattern_chars, &text_chars),
                "{pattern:?} in {text:?}"
            );
        }
    }
}
