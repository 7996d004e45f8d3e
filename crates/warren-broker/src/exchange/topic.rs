//! Topic-exchange routing: a trie of binding patterns, matched against a routing key.
//!
//! A binding pattern and a routing key are both lists of *words* separated by `.`. In a pattern,
//! the word `*` matches exactly one word and the word `#` matches zero or more words; every
//! other word (including `a*` or `#b`, which are not wildcards) matches only itself, byte for
//! byte.
//!
//! Word splitting follows RabbitMQ (`rabbit_db_topic_exchange:split_topic_key/1`) exactly:
//!
//! - the empty string has **zero** words, so key `""` is matched by patterns `""` and `#` (and
//!   `#.#` …) but not by `*`;
//! - otherwise there is one more word than there are dots, and words may be empty: `a..b` is
//!   `["a", "", "b"]`, `a.` is `["a", ""]`, and `.` is `["", ""]`.
//!
//! Routing keys and patterns are AMQP short strings (at most 255 bytes, so at most 256 words);
//! the broker must reject longer ones before they get here. The trie's depth is the word
//! count of the longest pattern, and both removal and dropping a node recurse once per level.
//!
//! Matching walks the trie in step with the key, splitting the key as it goes rather than into a
//! list first. A `#` node is a state that may swallow the next word and stay where it is, rather
//! than a choice among every split of the rest of the key, and nothing is allocated per message
//! in the common case. The only subtlety is that a pattern with two or more `#` (such as `#.#` or
//! `a.#.x.#`) can match one key in several ways; those states are remembered so that each
//! pattern is reported once per key (see [`TopicTrie::for_each_match`]).

use std::collections::{HashMap, HashSet};

/// A set of `(pattern, value)` pairs, indexed for routing by topic.
///
/// `T` is whatever the exchange binds to (a queue or an exchange handle); it only needs
/// `PartialEq`, so that a pair can be found again for removal.
#[derive(Clone, Debug)]
pub struct TopicTrie<T> {
    root: Node<T>,
    len: usize,
}

#[derive(Clone, Debug)]
struct Node<T> {
    /// Children reached by a literal word. `*` and `#` never appear here: they have their own
    /// slots, so a routing key containing the word `*` or `#` is just a literal and cannot be
    /// mistaken for a wildcard.
    words: HashMap<Box<str>, Node<T>>,
    star: Option<Box<Node<T>>>,
    hash: Option<Box<Node<T>>>,
    /// The values bound with the pattern that ends at this node.
    values: Vec<T>,
}

impl<T> Default for Node<T> {
    fn default() -> Self {
        Node {
            words: HashMap::new(),
            star: None,
            hash: None,
            values: Vec::new(),
        }
    }
}

impl<T> Node<T> {
    /// Nothing is bound here or below, so the node can be pruned.
    fn is_empty(&self) -> bool {
        self.values.is_empty()
            && self.words.is_empty()
            && self.star.is_none()
            && self.hash.is_none()
    }
}

impl<T> Default for TopicTrie<T> {
    fn default() -> Self {
        TopicTrie {
            root: Node::default(),
            len: 0,
        }
    }
}

/// The words of a pattern or key, split the way RabbitMQ splits them (see the module docs).
fn words(s: &str) -> impl Iterator<Item = &str> {
    // Spec (RabbitMQ): `split_topic_key(<<>>) -> []`. `str::split` would give one empty word.
    (!s.is_empty()).then(|| s.split('.')).into_iter().flatten()
}

/// A position in a routing key: the byte offset where the next word starts, or [`END`] once
/// every word has been consumed. Offsets (rather than a pre-split word list) let matching run
/// without allocating.
const END: usize = usize::MAX;

fn first_position(key: &str) -> usize {
    if key.is_empty() {
        END
    } else {
        0
    }
}

/// The word starting at `pos` (which is not [`END`]) and the position after it.
fn word_at(key: &str, pos: usize) -> (&str, usize) {
    // Positions are 0 or one past a '.', so always in bounds and on a char boundary; `get` keeps
    // a broken invariant from becoming a panic.
    let rest = key.get(pos..).unwrap_or("");
    match rest.find('.') {
        Some(dot) => (&rest[..dot], pos + dot + 1),
        None => (rest, END),
    }
}

impl<T: PartialEq> TopicTrie<T> {
    pub fn new() -> Self {
        Self::default()
    }

    /// The number of `(pattern, value)` pairs.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Adds `value` under `pattern`. Returns `false`, changing nothing, if that pair was
    /// already present.
    pub fn insert(&mut self, pattern: &str, value: T) -> bool {
        let mut node = &mut self.root;
        for word in words(pattern) {
            node = match word {
                "*" => node.star.get_or_insert_with(Box::default),
                "#" => node.hash.get_or_insert_with(Box::default),
                _ => node.words.entry(Box::from(word)).or_default(),
            };
        }
        if node.values.contains(&value) {
            return false;
        }
        node.values.push(value);
        self.len += 1;
        true
    }

    /// Removes `value` from under `pattern`, pruning nodes left with nothing bound below them.
    /// Returns `false` if the pair was not present.
    pub fn remove(&mut self, pattern: &str, value: &T) -> bool {
        let removed = remove_from(&mut self.root, &mut words(pattern), value);
        if removed {
            self.len -= 1;
        }
        removed
    }

    /// Calls `f` once for every `(pattern, value)` pair whose pattern matches `routing_key`.
    ///
    /// A value bound under two different patterns that both match is reported once per pattern
    /// (the caller deduplicates destinations); one pattern is never reported twice for a key,
    /// however many ways its `#`s can split the key.
    pub fn for_each_match(&self, routing_key: &str, f: &mut impl FnMut(&T)) {
        let mut walk = Walk {
            key: routing_key,
            seen: Seen::new(),
            f,
        };
        walk.visit(&self.root, first_position(routing_key), 0, false);
    }
}

fn remove_from<'p, T: PartialEq>(
    node: &mut Node<T>,
    rest: &mut impl Iterator<Item = &'p str>,
    value: &T,
) -> bool {
    let Some(word) = rest.next() else {
        let Some(i) = node.values.iter().position(|v| v == value) else {
            return false;
        };
        // `remove`, not `swap_remove`: keeps delivery order stable for the remaining bindings.
        node.values.remove(i);
        return true;
    };
    match word {
        "*" | "#" => {
            let slot = if word == "*" {
                &mut node.star
            } else {
                &mut node.hash
            };
            let Some(child) = slot.as_deref_mut() else {
                return false;
            };
            let removed = remove_from(child, rest, value);
            if removed && child.is_empty() {
                *slot = None;
            }
            removed
        }
        _ => {
            let Some(child) = node.words.get_mut(word) else {
                return false;
            };
            let removed = remove_from(child, rest, value);
            if removed && child.is_empty() {
                node.words.remove(word);
            }
            removed
        }
    }
}

/// The state of one [`TopicTrie::for_each_match`] call.
struct Walk<'k, 'f, F> {
    key: &'k str,
    seen: Seen,
    f: &'f mut F,
}

/// `(node address, key position)` states already visited, kept only for nodes with two or more
/// `#` on their path. Only those can be reached more than once: with at most one `#` in a
/// pattern prefix, how many words the `#` swallowed is fixed by the key position, so each state
/// has exactly one derivation, and patterns like `logs.#` never touch this set.
///
/// A few states are kept inline and scanned, so a binding such as `#.#` costs no allocation on
/// ordinary keys; past that the set spills into a hash set.
struct Seen {
    inline: [(usize, usize); Seen::INLINE],
    len: usize,
    spilled: Option<HashSet<(usize, usize)>>,
}

impl Seen {
    const INLINE: usize = 16;

    fn new() -> Self {
        Seen {
            inline: [(0, 0); Seen::INLINE],
            len: 0,
            spilled: None,
        }
    }

    /// Records `state`; `false` if it was already there.
    fn insert(&mut self, state: (usize, usize)) -> bool {
        if let Some(set) = &mut self.spilled {
            return set.insert(state);
        }
        let used = &self.inline[..self.len];
        if used.contains(&state) {
            return false;
        }
        if self.len < Seen::INLINE {
            self.inline[self.len] = state;
            self.len += 1;
        } else {
            let mut set: HashSet<_> = used.iter().copied().collect();
            set.insert(state);
            self.spilled = Some(set);
        }
        true
    }
}

impl<F> Walk<'_, '_, F> {
    /// Visits `node` at key position `pos`. `hashes` is the number of `#` on the node's path;
    /// `is_hash` says whether the node is itself a `#` (which may swallow further words).
    ///
    /// Recursion descends one trie level per call; a `#` swallowing words is a loop here, so
    /// the stack depth is bounded by the pattern length, not the key length.
    fn visit<T>(&mut self, node: &Node<T>, mut pos: usize, hashes: u32, is_hash: bool)
    where
        F: FnMut(&T),
    {
        loop {
            if hashes >= 2 {
                let state = (std::ptr::from_ref(node) as usize, pos);
                if !self.seen.insert(state) {
                    // Visited already, and that visit went on to every later position this
                    // loop would reach, so everything from here on has been reported.
                    return;
                }
            }
            // `#` matching zero words: its node is matched at this same position.
            if let Some(hash) = node.hash.as_deref() {
                self.visit(hash, pos, hashes + 1, true);
            }
            if pos == END {
                for value in &node.values {
                    (self.f)(value);
                }
                return;
            }
            let (word, next) = word_at(self.key, pos);
            if let Some(child) = node.words.get(word) {
                self.visit(child, next, hashes, false);
            }
            if let Some(star) = node.star.as_deref() {
                self.visit(star, next, hashes, false);
            }
            if !is_hash {
                return;
            }
            // This node is a `#`: it swallows `word` and is matched again at the next position.
            pos = next;
        }
    }
}

/// Whether `pattern` matches `routing_key`: a direct, unoptimised statement of the rules, for
/// checking [`TopicTrie`] against (property tests) and for one-off checks off the hot path.
///
/// It backtracks over every way each `#` can split the key, so its cost grows exponentially with
/// the number of `#` in the pattern; do not use it for routing.
#[cfg(test)]
pub fn topic_matches(pattern: &str, routing_key: &str) -> bool {
    fn go(pattern: &[&str], key: &[&str]) -> bool {
        match pattern.split_first() {
            None => key.is_empty(),
            Some((&"#", rest)) => (0..=key.len()).any(|skip| go(rest, &key[skip..])),
            Some((&"*", rest)) => !key.is_empty() && go(rest, &key[1..]),
            Some((word, rest)) => key.first() == Some(word) && go(rest, &key[1..]),
        }
    }
    let pattern: Vec<&str> = words(pattern).collect();
    let key: Vec<&str> = words(routing_key).collect();
    go(&pattern, &key)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The values matched for `key`, sorted, with duplicates kept (so a double report shows).
    fn matches<T: PartialEq + Clone + Ord>(trie: &TopicTrie<T>, key: &str) -> Vec<T> {
        let mut out = Vec::new();
        trie.for_each_match(key, &mut |v: &T| out.push(v.clone()));
        out.sort();
        out
    }

    fn trie_of(patterns: &[&'static str]) -> TopicTrie<&'static str> {
        let mut trie = TopicTrie::new();
        for p in patterns {
            assert!(trie.insert(p, *p));
        }
        trie
    }

    #[test]
    fn tutorial_five_bindings_route_as_rabbitmq_documents() {
        // RabbitMQ tutorial 5: Q1 is bound with `*.orange.*`, Q2 with `*.*.rabbit` and `lazy.#`.
        let mut trie = TopicTrie::new();
        trie.insert("*.orange.*", "Q1");
        trie.insert("*.*.rabbit", "Q2");
        trie.insert("lazy.#", "Q2");
        let cases: &[(&str, &[&str])] = &[
            ("quick.orange.rabbit", &["Q1", "Q2"]),
            ("lazy.orange.elephant", &["Q1", "Q2"]),
            ("quick.orange.fox", &["Q1"]),
            ("lazy.brown.fox", &["Q2"]),
            // Both of Q2's patterns match: reported twice, once per pattern.
            ("lazy.pink.rabbit", &["Q2", "Q2"]),
            ("quick.brown.fox", &[]),
            ("orange", &[]),
            ("quick.orange.male.rabbit", &[]),
            ("lazy.orange.male.rabbit", &["Q2"]),
        ];
        for (key, expected) in cases {
            assert_eq!(matches(&trie, key), *expected, "key {key:?}");
        }
    }

    #[test]
    fn hash_alone_matches_every_key_including_empty() {
        let trie = trie_of(&["#"]);
        for key in ["", "a", "a.b.c", ".", "a..b", "#", "*"] {
            assert_eq!(matches(&trie, key), ["#"], "key {key:?}");
        }
    }

    #[test]
    fn empty_key_has_zero_words() {
        let trie = trie_of(&["", "*", "#", "#.#", "*.#", "#.*"]);
        assert_eq!(matches(&trie, ""), ["", "#", "#.#"]);
        // One empty word is not zero words: "" is a key of its own only when it is the whole key.
        assert_eq!(matches(&trie, "a"), ["#", "#.#", "#.*", "*", "*.#"]);
    }

    #[test]
    fn double_hash_reports_once_per_key() {
        let trie = trie_of(&["#.#", "#.#.#", "a.#.#.b", "#.a.#", "#.*.#"]);
        assert_eq!(matches(&trie, "a.a.a"), ["#.#", "#.#.#", "#.*.#", "#.a.#"]);
        assert_eq!(
            matches(&trie, "a.b"),
            ["#.#", "#.#.#", "#.*.#", "#.a.#", "a.#.#.b"]
        );
        assert_eq!(
            matches(&trie, "a.x.b.y.b"),
            ["#.#", "#.#.#", "#.*.#", "#.a.#", "a.#.#.b"]
        );
        assert_eq!(matches(&trie, ""), ["#.#", "#.#.#"]);
    }

    #[test]
    fn long_keys_with_many_hashes_still_report_once() {
        // Enough `(node, position)` states to spill the inline visited set.
        let patterns = ["#.#.#.#", "#.a.#.a.#", "a.#.*.#.a", "#.b", "*.#.#"];
        let trie = trie_of(&patterns);
        let key = ["a"; 30].join(".");
        let mut expected: Vec<_> = patterns
            .into_iter()
            .filter(|p| topic_matches(p, &key))
            .collect();
        expected.sort();
        assert_eq!(expected, ["#.#.#.#", "#.a.#.a.#", "*.#.#", "a.#.*.#.a"]);
        assert_eq!(matches(&trie, &key), expected);
    }

    #[test]
    fn hash_between_words_matches_zero_or_more() {
        let trie = trie_of(&["a.#.b"]);
        for key in ["a.b", "a.x.b", "a.x.y.b", "a.b.b", "a..b"] {
            assert_eq!(matches(&trie, key), ["a.#.b"], "key {key:?}");
        }
        for key in ["a", "b", "a.b.c", "x.a.b", "ab"] {
            assert!(matches(&trie, key).is_empty(), "key {key:?}");
        }
    }

    #[test]
    fn empty_words_are_words() {
        let trie = trie_of(&["a..b", "a.*.b", "a.", "*", "*.*"]);
        assert_eq!(matches(&trie, "a..b"), ["a.*.b", "a..b"]);
        assert_eq!(matches(&trie, "a."), ["*.*", "a."]);
        assert_eq!(matches(&trie, "."), ["*.*"]);
        assert_eq!(matches(&trie, "a.b"), ["*.*"]);
        assert!(matches(&trie, "a.b.c").is_empty());
    }

    #[test]
    fn wildcard_characters_inside_words_are_literal() {
        let trie = trie_of(&["a*", "#b", "*"]);
        assert_eq!(matches(&trie, "a*"), ["*", "a*"]);
        assert_eq!(matches(&trie, "ab"), ["*"]);
        assert_eq!(matches(&trie, "xb"), ["*"]);
        assert_eq!(matches(&trie, "#b"), ["#b", "*"]);
        // A key word spelled `*` is a literal too, not a wildcard.
        let trie = trie_of(&["a"]);
        assert!(matches(&trie, "*").is_empty());
    }

    #[test]
    fn insert_reports_duplicate_pairs() {
        let mut trie = TopicTrie::new();
        assert!(trie.insert("a.#", 1));
        assert!(!trie.insert("a.#", 1));
        assert!(trie.insert("a.#", 2));
        assert!(trie.insert("a.*", 1));
        assert_eq!(trie.len(), 3);
    }

    #[test]
    fn removed_binding_no_longer_matches_and_trie_is_pruned() {
        let mut trie = TopicTrie::new();
        trie.insert("a.*.#.c", 1);
        trie.insert("a.b", 2);
        assert_eq!(matches(&trie, "a.x.c"), [1]);
        assert!(!trie.remove("a.*.#.c", &2), "wrong value");
        assert!(!trie.remove("a.*.c", &1), "wrong pattern");
        assert!(trie.remove("a.*.#.c", &1));
        assert!(!trie.remove("a.*.#.c", &1), "already gone");
        assert!(matches(&trie, "a.x.c").is_empty());
        assert_eq!(trie.len(), 1);
        // The `*`, `#` and `c` nodes are gone; `a` stays for `a.b`.
        let a = &trie.root.words["a"];
        assert!(a.star.is_none());
        assert!(trie.remove("a.b", &2));
        assert!(trie.is_empty());
        assert!(trie.root.is_empty());
    }

    #[test]
    fn naive_matcher_agrees_with_rabbitmq_examples() {
        assert!(topic_matches("", ""));
        assert!(topic_matches("#", ""));
        assert!(!topic_matches("*", ""));
        assert!(topic_matches("a.#", "a"));
        assert!(!topic_matches("a.*", "a"));
        assert!(topic_matches("*.orange.*", "quick.orange.rabbit"));
        assert!(!topic_matches("*.orange.*", "quick.orange.male.rabbit"));
    }

    fn word() -> impl Strategy<Value = &'static str> {
        prop::sample::select(vec!["a", "b", "c", "", "*", "#"])
    }

    fn pattern() -> impl Strategy<Value = String> {
        prop::collection::vec(word(), 0..=5).prop_map(|w| w.join("."))
    }

    fn key() -> impl Strategy<Value = String> {
        prop::collection::vec(prop::sample::select(vec!["a", "b", "c", ""]), 0..=6)
            .prop_map(|w| w.join("."))
    }

    /// Each bound index is reported exactly once if its pattern matches, and never otherwise.
    fn check(trie: &TopicTrie<usize>, live: &[(usize, String)], key: &str) {
        let expected: Vec<usize> = live
            .iter()
            .filter(|(_, p)| topic_matches(p, key))
            .map(|(i, _)| *i)
            .collect();
        assert_eq!(
            matches(trie, key),
            expected,
            "key {key:?}, bindings {live:?}"
        );
    }

    proptest! {
        #[test]
        fn trie_matches_the_naive_matcher(
            patterns in prop::collection::vec(pattern(), 0..12),
            keys in prop::collection::vec(key(), 1..12),
            removals in prop::collection::vec(any::<bool>(), 12),
        ) {
            let mut trie = TopicTrie::new();
            // Value = index, so the same pattern bound twice is two distinct pairs.
            let mut live: Vec<(usize, String)> = patterns.into_iter().enumerate().collect();
            for (i, p) in &live {
                prop_assert!(trie.insert(p, *i));
            }
            prop_assert_eq!(trie.len(), live.len());
            for k in &keys {
                check(&trie, &live, k);
            }
            let mut kept = Vec::new();
            for ((i, p), remove) in live.drain(..).zip(&removals) {
                if *remove {
                    prop_assert!(trie.remove(&p, &i));
                } else {
                    kept.push((i, p));
                }
            }
            prop_assert_eq!(trie.len(), kept.len());
            for k in &keys {
                check(&trie, &kept, k);
            }
            for (i, p) in &kept {
                prop_assert!(trie.remove(p, i));
            }
            prop_assert!(trie.is_empty());
            prop_assert!(trie.root.is_empty(), "every node pruned");
        }
    }
}
