//! Where in a config file's text an error is: its line and its key, read
//! from the spans of the document as toml_edit parsed it, so that a key in
//! an inline table, a dotted key or a multi-line value is found where a
//! scan of the text's lines would guess.

use toml_edit::{ImDocument, Item, TableLike};

/// A config file's text with its parsed document.
pub(super) struct Positions<'a> {
    text: &'a str,
    /// `None` when the text is not TOML: then only lines are known.
    doc: Option<ImDocument<&'a str>>,
}

impl<'a> Positions<'a> {
    pub(super) fn new(text: &'a str) -> Self {
        Positions {
            text,
            doc: ImDocument::parse(text).ok(),
        }
    }

    /// The line (1-based) of byte `offset`.
    pub(super) fn line(&self, offset: usize) -> usize {
        let before = &self.text.as_bytes()[..offset.min(self.text.len())];
        before.iter().filter(|&&b| b == b'\n').count() + 1
    }

    /// The name of the innermost key whose `key = value` holds byte
    /// `offset`: the key an error at that offset is about.
    pub(super) fn key_at(&self, offset: usize) -> Option<String> {
        innermost_key(self.doc.as_ref()?.as_table(), offset)
    }

    /// The bytes of the innermost `key = value` that holds byte `offset`,
    /// from the start of its line when only its dotted key's path is
    /// before it there: what removing the setting blanks.
    pub(super) fn entry_at(&self, offset: usize) -> Option<std::ops::Range<usize>> {
        let found = innermost_entry(self.doc.as_ref()?.as_table(), offset)?;
        let line_start = self.text[..found.start].rfind('\n').map_or(0, |i| i + 1);
        let before = &self.text[line_start..found.start];
        let dotted_path = before
            .chars()
            .all(|c| c.is_alphanumeric() || matches!(c, '_' | '-' | '.' | ' ' | '\t' | '"' | '\''));
        Some(if dotted_path { line_start } else { found.start }..found.end)
    }

    /// The line where `key` is set in the table at `path`, or else the
    /// line of the table's header.
    pub(super) fn line_of_key(&self, path: &[&str], key: &str) -> Option<usize> {
        let mut item = self.doc.as_ref()?.as_item();
        for name in path {
            item = item.get(name)?;
        }
        let span = match item.as_table_like()?.key(key).and_then(|k| k.span()) {
            Some(span) => span,
            None => item.span()?,
        };
        Some(self.line(span.start))
    }
}

fn innermost_key(table: &dyn TableLike, offset: usize) -> Option<String> {
    innermost(table, offset).map(|(name, _)| name)
}

fn innermost_entry(table: &dyn TableLike, offset: usize) -> Option<std::ops::Range<usize>> {
    innermost(table, offset).map(|(_, span)| span)
}

/// The name and the `key = value` span of the innermost setting holding
/// byte `offset`.
fn innermost(table: &dyn TableLike, offset: usize) -> Option<(String, std::ops::Range<usize>)> {
    for (name, item) in table.iter() {
        if let Some(inner) = item.as_table_like() {
            if let Some(found) = innermost(inner, offset) {
                return Some(found);
            }
        }
        if let Some(array) = item.as_array_of_tables() {
            if let Some(found) = array.iter().find_map(|t| innermost(t, offset)) {
                return Some(found);
            }
        }
        // Only a `key = value` pair is a candidate: a `[table]` header's
        // key is the table's, not a setting.
        if let (Item::Value(value), Some(key)) = (item, table.key(name)) {
            let (Some(k), Some(v)) = (key.span(), value.span()) else {
                continue;
            };
            let span = k.start..v.end.max(k.end);
            if span.contains(&offset) {
                return Some((name.to_owned(), span));
            }
        }
    }
    None
}
