//! A YAML document as a tree whose every node and key knows its line, so that an error can
//! name the file and the line of the key it is about. Built from yaml-rust2's parser events;
//! anchors and aliases are resolved by copying the anchored node, and merge keys (`<<:
//! *anchor`, as compose files use with `x-` extension fields) are applied.

use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::{Marker, TScalarStyle};

#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    /// 1-based line where the node starts.
    pub line: usize,
    pub value: Value,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// `~`, `null`, or nothing at all (`key:`).
    Null,
    /// A scalar's text; `plain` when it was not quoted (only a plain `true` is a boolean).
    Scalar {
        text: String,
        plain: bool,
    },
    Seq(Vec<Node>),
    Map(Vec<(Key, Node)>),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Key {
    pub name: String,
    pub line: usize,
}

impl Node {
    pub fn get(&self, key: &str) -> Option<&Node> {
        match &self.value {
            Value::Map(entries) => entries.iter().find(|(k, _)| k.name == key).map(|(_, v)| v),
            _ => None,
        }
    }

    /// What kind of node this is, for messages ("expected a string, found a list").
    pub fn kind(&self) -> &'static str {
        match self.value {
            Value::Null => "nothing (null)",
            Value::Scalar { .. } => "a scalar",
            Value::Seq(_) => "a list",
            Value::Map(_) => "a mapping",
        }
    }
}

/// Why a text is not a YAML document: the line and the parser's words.
#[derive(Debug, Clone, PartialEq)]
pub struct SyntaxError {
    pub line: usize,
    pub message: String,
}

/// Parses the first document of `text`; an empty text is `None`.
pub fn parse(text: &str) -> Result<Option<Node>, SyntaxError> {
    let mut builder = Builder::default();
    let mut parser = Parser::new_from_str(text);
    parser
        .load(&mut builder, false)
        .map_err(|e| SyntaxError { line: e.marker().line(), message: e.info().to_owned() })?;
    if let Some(e) = builder.error {
        return Err(e);
    }
    Ok(builder.root)
}

enum Frame {
    Seq { anchor: usize, line: usize, items: Vec<Node> },
    Map { anchor: usize, line: usize, entries: Vec<(Key, Node)>, key: Option<Key> },
}

#[derive(Default)]
struct Builder {
    stack: Vec<Frame>,
    anchors: std::collections::HashMap<usize, Node>,
    root: Option<Node>,
    error: Option<SyntaxError>,
    done: bool,
}

impl Builder {
    fn fail(&mut self, line: usize, message: String) {
        if self.error.is_none() {
            self.error = Some(SyntaxError { line, message });
        }
    }

    fn finish(&mut self, anchor: usize, node: Node) {
        if anchor > 0 {
            self.anchors.insert(anchor, node.clone());
        }
        self.insert(node);
    }

    fn insert(&mut self, node: Node) {
        match self.stack.last_mut() {
            None => {
                self.root = Some(node);
                self.done = true;
            }
            Some(Frame::Seq { items, .. }) => items.push(node),
            Some(Frame::Map { entries, key, .. }) => match key.take() {
                None => match node.value {
                    Value::Scalar { text, .. } => *key = Some(Key { name: text, line: node.line }),
                    Value::Null => *key = Some(Key { name: String::new(), line: node.line }),
                    _ => {
                        let line = node.line;
                        self.fail(line, "a mapping key must be a plain string".into());
                    }
                },
                Some(k) => {
                    if k.name != "<<" && entries.iter().any(|(e, _)| e.name == k.name) {
                        let message = format!("key `{}` appears twice in this mapping", k.name);
                        let line = k.line;
                        self.fail(line, message);
                        return;
                    }
                    entries.push((k, node));
                }
            },
        }
    }
}

/// Applies merge keys: the entries of `<<`'s mapping (or of each mapping in its list, the
/// first winning) that the mapping does not have itself.
fn merge_keys(entries: Vec<(Key, Node)>) -> Result<Vec<(Key, Node)>, SyntaxError> {
    if !entries.iter().any(|(k, _)| k.name == "<<") {
        return Ok(entries);
    }
    let (merges, mut own): (Vec<_>, Vec<_>) = entries.into_iter().partition(|(k, _)| k.name == "<<");
    for (key, node) in merges {
        let sources = match node.value {
            Value::Map(m) => vec![m],
            Value::Seq(items) => items
                .into_iter()
                .map(|n| match n.value {
                    Value::Map(m) => Ok(m),
                    _ => Err(SyntaxError { line: n.line, message: "`<<` merges mappings only".into() }),
                })
                .collect::<Result<_, _>>()?,
            _ => return Err(SyntaxError { line: key.line, message: "`<<` merges mappings only".into() }),
        };
        for source in sources {
            for (k, v) in source {
                if !own.iter().any(|(o, _)| o.name == k.name) {
                    own.push((k, v));
                }
            }
        }
    }
    Ok(own)
}

impl MarkedEventReceiver for Builder {
    fn on_event(&mut self, ev: Event, mark: Marker) {
        if self.error.is_some() || self.done {
            return;
        }
        let line = mark.line();
        match ev {
            Event::Scalar(text, style, anchor, _tag) => {
                let plain = style == TScalarStyle::Plain;
                let value = if plain && matches!(text.as_str(), "" | "~" | "null" | "Null" | "NULL") {
                    Value::Null
                } else {
                    Value::Scalar { text, plain }
                };
                self.finish(anchor, Node { line, value });
            }
            Event::SequenceStart(anchor, _) => self.stack.push(Frame::Seq { anchor, line, items: Vec::new() }),
            Event::MappingStart(anchor, _) => {
                self.stack.push(Frame::Map { anchor, line, entries: Vec::new(), key: None })
            }
            Event::SequenceEnd => {
                if let Some(Frame::Seq { anchor, line, items }) = self.stack.pop() {
                    self.finish(anchor, Node { line, value: Value::Seq(items) });
                }
            }
            Event::MappingEnd => {
                if let Some(Frame::Map { anchor, line, entries, .. }) = self.stack.pop() {
                    match merge_keys(entries) {
                        Ok(entries) => self.finish(anchor, Node { line, value: Value::Map(entries) }),
                        Err(e) => self.fail(e.line, e.message),
                    }
                }
            }
            Event::Alias(id) => match self.anchors.get(&id).cloned() {
                Some(node) => self.insert(node),
                None => self.fail(line, "an alias to an anchor that is not defined before it".into()),
            },
            Event::Nothing | Event::StreamStart | Event::StreamEnd | Event::DocumentStart | Event::DocumentEnd => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scalar(n: &Node) -> &str {
        match &n.value {
            Value::Scalar { text, .. } => text,
            other => panic!("not a scalar: {other:?}"),
        }
    }

    #[test]
    fn nodes_and_keys_know_their_lines() {
        let doc =
            parse("services:\n  db:\n    image: \"postgres\"\n    ports:\n      - 5432\n    env:\n").unwrap().unwrap();
        let db = doc.get("services").unwrap().get("db").unwrap();
        let Value::Map(entries) = &db.value else { panic!() };
        assert_eq!((entries[0].0.name.as_str(), entries[0].0.line), ("image", 3));
        assert_eq!(scalar(&entries[0].1), "postgres");
        assert_eq!(entries[0].1.value, Value::Scalar { text: "postgres".into(), plain: false });
        let Value::Seq(ports) = &db.get("ports").unwrap().value else { panic!() };
        assert_eq!((ports[0].line, scalar(&ports[0])), (5, "5432"));
        assert_eq!(db.get("env").unwrap().value, Value::Null);
    }

    #[test]
    fn anchors_aliases_and_merge_keys_resolve() {
        let text = "x-common: &common\n  restart: always\n  environment:\n    A: '1'\nservices:\n  a:\n    <<: *common\n    restart: never\n  b: *common\n";
        let doc = parse(text).unwrap().unwrap();
        let a = doc.get("services").unwrap().get("a").unwrap();
        assert_eq!(scalar(a.get("restart").unwrap()), "never");
        assert_eq!(scalar(a.get("environment").unwrap().get("A").unwrap()), "1");
        let b = doc.get("services").unwrap().get("b").unwrap();
        assert_eq!(scalar(b.get("restart").unwrap()), "always");
    }

    #[test]
    fn syntax_errors_and_duplicate_keys_name_their_line() {
        let e = parse("services:\n  a:\n    image: [unclosed\n").unwrap_err();
        assert!(e.line >= 3, "{e:?}");
        let e = parse("services:\n  a:\n    image: x\n    image: y\n").unwrap_err();
        assert_eq!(e, SyntaxError { line: 4, message: "key `image` appears twice in this mapping".into() });
        assert_eq!(parse("").unwrap(), None);
    }
}
