//! Key path → line, and byte offset → key path, through a span-keeping
//! [`toml_edit::ImDocument`].

use std::ops::Range;

use toml_edit::{Array, ArrayOfTables, ImDocument, InlineTable, Item, Key, Table, Value};

use super::keypath::*;

/// A node of the span-keeping document.
#[derive(Clone, Copy)]
pub(super) enum Node<'a> {
    Table(&'a Table),
    Inline(&'a InlineTable),
    Array(&'a Array),
    Tables(&'a ArrayOfTables),
    Scalar(&'a Value),
}

impl<'a> Node<'a> {
    fn of_item(item: &'a Item) -> Option<Node<'a>> {
        match item {
            Item::None => None,
            Item::Table(t) => Some(Node::Table(t)),
            Item::ArrayOfTables(a) => Some(Node::Tables(a)),
            Item::Value(v) => Some(Node::of_value(v)),
        }
    }

    fn of_value(value: &'a Value) -> Node<'a> {
        match value {
            Value::Array(a) => Node::Array(a),
            Value::InlineTable(t) => Node::Inline(t),
            v => Node::Scalar(v),
        }
    }

    fn span(self) -> Option<Range<usize>> {
        match self {
            Node::Table(t) => t.span(),
            Node::Inline(t) => t.span(),
            Node::Array(a) => a.span(),
            Node::Tables(a) => a.span(),
            Node::Scalar(v) => v.span(),
        }
    }

    fn child(self, seg: &Seg) -> Option<(Option<&'a Key>, Node<'a>)> {
        match (self, seg) {
            (Node::Table(t), Seg::Key(k)) => {
                let (key, item) = t.get_key_value(k)?;
                Some((Some(key), Node::of_item(item)?))
            }
            (Node::Inline(t), Seg::Key(k)) => {
                let (key, item) = t.get_key_value(k)?;
                Some((Some(key), Node::of_item(item)?))
            }
            (Node::Array(a), Seg::Index(i)) => Some((None, Node::of_value(a.get(*i)?))),
            (Node::Tables(a), Seg::Index(i)) => Some((None, Node::Table(a.get(*i)?))),
            _ => None,
        }
    }

    /// Children with their key path segment, in no particular order.
    fn children(self) -> Vec<(Seg, Node<'a>)> {
        match self {
            Node::Table(t) => t
                .iter()
                .filter_map(|(k, _)| {
                    let seg = Seg::Key(k.to_owned());
                    let (_, n) = self.child(&seg)?;
                    Some((seg, n))
                })
                .collect(),
            Node::Inline(t) => t
                .iter()
                .map(|(k, v)| (Seg::Key(k.to_owned()), Node::of_value(v)))
                .collect(),
            Node::Array(a) => a
                .iter()
                .enumerate()
                .map(|(i, v)| (Seg::Index(i), Node::of_value(v)))
                .collect(),
            Node::Tables(a) => a
                .iter()
                .enumerate()
                .map(|(i, t)| (Seg::Index(i), Node::Table(t)))
                .collect(),
            Node::Scalar(_) => Vec::new(),
        }
    }
}

/// Walks `path` as far as it exists; returns the deepest span found (the node's, else the
/// key's), so a missing key reports the line of its table.
pub(super) fn span_of(doc: &ImDocument<String>, path: &KeyPath) -> Option<Range<usize>> {
    let mut node = Node::Table(doc.as_table());
    let mut best = None;
    for seg in &path.0 {
        let Some((key, child)) = node.child(seg) else {
            break;
        };
        if let Some(span) = child.span().or_else(|| key.and_then(Key::span)) {
            best = Some(span);
        }
        node = child;
    }
    best
}

/// The 1-based line of the deepest existing part of `path`.
pub(crate) fn line_of(doc: &ImDocument<String>, path: &KeyPath) -> Option<usize> {
    span_of(doc, path).map(|s| line_at(doc.raw(), s.start))
}

/// The value at `path` exactly as written in the file, if `path` names a value.
pub(super) fn value_text(doc: &ImDocument<String>, path: &KeyPath) -> Option<String> {
    let mut node = Node::Table(doc.as_table());
    for seg in &path.0 {
        node = node.child(seg)?.1;
    }
    match node {
        Node::Scalar(_) | Node::Array(_) | Node::Inline(_) => {
            let text = doc.raw().get(node.span()?)?.trim();
            // Keep one-line errors one line, and long arrays short.
            (!text.contains('\n') && text.len() <= 80).then(|| text.to_owned())
        }
        _ => None,
    }
}

/// The deepest key path whose value (or table header) covers byte `pos`.
pub(super) fn path_at(doc: &ImDocument<String>, pos: usize) -> Option<KeyPath> {
    fn walk(node: Node<'_>, path: &mut KeyPath, pos: usize) -> bool {
        for (seg, child) in node.children() {
            path.0.push(seg);
            let covers = child.span().is_some_and(|s| s.contains(&pos));
            // Tables' spans cover only their header, so always look inside them.
            let container = matches!(child, Node::Table(_) | Node::Tables(_));
            if (covers || container) && walk(child, path, pos) {
                return true;
            }
            if covers {
                return true;
            }
            path.0.pop();
        }
        false
    }
    let mut path = KeyPath::root();
    walk(Node::Table(doc.as_table()), &mut path, pos).then_some(path)
}

/// 1-based line of byte offset `pos` in `text`.
pub(crate) fn line_at(text: &str, pos: usize) -> usize {
    let pos = pos.min(text.len());
    text.as_bytes()[..pos]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}
