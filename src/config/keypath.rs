//! Key paths in the one style every configuration message uses: `probe[0].interval`,
//! `agent.queue.max_disk_bytes`, `pricing."gpt-4.1".input_per_mtok` (a key that is not a bare
//! TOML key is quoted), and the line each key is on in the file, from the TOML parser's spans.

use std::collections::HashMap;
use std::fmt;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use toml::Spanned;

/// One step of a key path: a table key or a list index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Segment {
    /// A key of a table.
    Key(String),
    /// A position in a list.
    Index(usize),
}

/// Where a value sits in the configuration, e.g. `probe[0].interval`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct KeyPath(pub(crate) Vec<Segment>);

impl KeyPath {
    /// This path with a table key appended.
    pub(crate) fn key(&self, key: &str) -> KeyPath {
        let mut p = self.clone();
        p.0.push(Segment::Key(key.to_string()));
        p
    }

    /// This path with a list index appended.
    pub(crate) fn index(&self, i: usize) -> KeyPath {
        let mut p = self.clone();
        p.0.push(Segment::Index(i));
        p
    }

    /// Whether `self` is `other` or lies inside it.
    pub(crate) fn starts_with(&self, other: &KeyPath) -> bool {
        self.0.starts_with(&other.0)
    }

    /// How many leading segments the two paths share.
    pub(crate) fn common_len(&self, other: &KeyPath) -> usize {
        self.0
            .iter()
            .zip(&other.0)
            .take_while(|(a, b)| a == b)
            .count()
    }
}

impl fmt::Display for KeyPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (n, segment) in self.0.iter().enumerate() {
            match segment {
                Segment::Index(i) => write!(f, "[{i}]")?,
                Segment::Key(k) if n == 0 => f.write_str(&quote_key(k))?,
                Segment::Key(k) => write!(f, ".{}", quote_key(k))?,
            }
        }
        Ok(())
    }
}

/// `parent.name`, with `name` quoted when it is not a bare TOML key: the Checker's way to
/// name a key inside a table whose keys the user chose (labels, headers, model names).
pub(crate) fn join_key(parent: &str, name: &str) -> String {
    format!("{parent}.{}", quote_key(name))
}

/// A key as TOML would write it: bare when it can be, else as a basic string.
fn quote_key(key: &str) -> String {
    let bare = !key.is_empty()
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if bare {
        key.to_string()
    } else {
        // Rust's escapes for quotes, backslashes and control characters are TOML's too.
        format!("{key:?}")
    }
}

/// The line (from 1) of every key in a TOML text, by its path.
#[derive(Debug, Default)]
pub(crate) struct LineIndex {
    lines: HashMap<String, usize>,
}

impl LineIndex {
    /// Indexes `text`; a text that does not parse gives an empty index (its syntax error is
    /// reported on its own).
    pub(crate) fn new(text: &str) -> LineIndex {
        let mut index = LineIndex::default();
        if let Ok(root) = toml::from_str::<Node>(text) {
            let starts = line_starts(text);
            index.walk(&starts, &KeyPath::default(), &root);
        }
        index
    }

    /// How many segments of `path` the file has, and the line of the deepest of them: the
    /// line of the key, or of the nearest table or list holding it.
    pub(crate) fn deepest(&self, path: &KeyPath) -> Option<(usize, usize)> {
        (1..=path.0.len()).rev().find_map(|n| {
            let prefix = KeyPath(path.0[..n].to_vec());
            self.lines.get(&prefix.to_string()).map(|line| (n, *line))
        })
    }

    fn walk(&mut self, starts: &[usize], at: &KeyPath, node: &Node) {
        match node {
            Node::Table(entries) => {
                for (key, value) in entries {
                    let path = at.key(key.get_ref());
                    self.lines
                        .insert(path.to_string(), line_at(starts, key.span().start));
                    self.walk(starts, &path, value);
                }
            }
            Node::List(items) => {
                for (i, item) in items.iter().enumerate() {
                    let path = at.index(i);
                    self.lines
                        .insert(path.to_string(), line_at(starts, item.span().start));
                    self.walk(starts, &path, item.get_ref());
                }
            }
            Node::Leaf => {}
        }
    }
}

/// Byte offsets at which each line starts.
fn line_starts(text: &str) -> Vec<usize> {
    std::iter::once(0)
        .chain(text.match_indices('\n').map(|(i, _)| i + 1))
        .collect()
}

/// The line (from 1) holding byte `offset`.
fn line_at(starts: &[usize], offset: usize) -> usize {
    starts.partition_point(|s| *s <= offset)
}

/// A TOML document's shape with the span of every key and list item; values are not kept.
/// (A table's own span is not asked for: a table made implicitly by a dotted header such as
/// `[pricing."gpt-4.1"]` has none.)
enum Node {
    Table(Vec<(Spanned<String>, Node)>),
    List(Vec<Spanned<Node>>),
    Leaf,
}

impl<'de> Deserialize<'de> for Node {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(NodeVisitor)
    }
}

struct NodeVisitor;

impl<'de> Visitor<'de> for NodeVisitor {
    type Value = Node;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a TOML value")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Node, A::Error> {
        let mut entries = Vec::new();
        while let Some(key) = map.next_key::<Spanned<String>>()? {
            entries.push((key, map.next_value::<Node>()?));
        }
        Ok(Node::Table(entries))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Node, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element::<Spanned<Node>>()? {
            items.push(item);
        }
        Ok(Node::List(items))
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Node, E> {
        Ok(Node::Leaf)
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Node, E> {
        Ok(Node::Leaf)
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Node, E> {
        Ok(Node::Leaf)
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Node, E> {
        Ok(Node::Leaf)
    }

    fn visit_str<E: de::Error>(self, _: &str) -> Result<Node, E> {
        Ok(Node::Leaf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_print_in_one_style() {
        let p = KeyPath::default().key("probe").index(0).key("interval");
        assert_eq!(p.to_string(), "probe[0].interval");
        let p = KeyPath::default()
            .key("pricing")
            .key("gpt-4.1")
            .key("input_per_mtok");
        assert_eq!(p.to_string(), "pricing.\"gpt-4.1\".input_per_mtok");
        let p = KeyPath::default()
            .key("agent")
            .key("external_labels")
            .key("bad-name");
        assert_eq!(p.to_string(), "agent.external_labels.bad-name");
        assert_eq!(join_key("x.headers", "a b"), "x.headers.\"a b\"");
        assert_eq!(join_key("pricing", "llama3"), "pricing.llama3");
    }

    struct LineLookup<'a>(&'a LineIndex);

    impl LineLookup<'_> {
        fn line_of(&self, path: &KeyPath) -> Option<usize> {
            self.0.deepest(path).map(|(_, line)| line)
        }
    }

    #[test]
    fn lines_come_from_the_toml_spans() {
        let text = "[agent]\ndrain_timeout = \"5s\"\n\n[[probe]]\nname = \"a\"\n\
                    headers = { X-A = \"1\" }\n\n[[probe]]\nname = \"b\"\n\
                    [pricing.\"gpt-4.1\"]\ninput_per_mtok = 1\n";
        let index = LineIndex::new(text);
        let lines = LineLookup(&index);
        let path = |s: &[Segment]| KeyPath(s.to_vec());
        use Segment::{Index, Key};
        let k = |s: &str| Key(s.to_string());
        assert_eq!(lines.line_of(&path(&[k("agent")])), Some(1));
        assert_eq!(
            lines.line_of(&path(&[k("agent"), k("drain_timeout")])),
            Some(2)
        );
        assert_eq!(lines.line_of(&path(&[k("probe"), Index(0)])), Some(4));
        assert_eq!(
            lines.line_of(&path(&[k("probe"), Index(0), k("name")])),
            Some(5)
        );
        assert_eq!(
            lines.line_of(&path(&[k("probe"), Index(0), k("headers"), k("X-A")])),
            Some(6)
        );
        assert_eq!(
            lines.line_of(&path(&[k("probe"), Index(1), k("name")])),
            Some(9)
        );
        // A key the file does not have: the line of the table that would hold it.
        assert_eq!(
            lines.line_of(&path(&[k("probe"), Index(1), k("url")])),
            Some(8)
        );
        assert_eq!(
            lines.line_of(&path(&[k("pricing"), k("gpt-4.1"), k("input_per_mtok")])),
            Some(11)
        );
        assert_eq!(lines.line_of(&path(&[k("scrape")])), None);
    }
}
