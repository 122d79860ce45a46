//! Located errors, rendered with the source line and a caret.

use std::fmt::Write;

use super::source::{Sources, Span};

/// A user-facing error: a stable code, a message and the span it points at.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("error[{code}]: {message}")]
pub struct Diagnostic {
    /// Stable code, e.g. `E0101`; docs/LANGUAGE.md lists them all.
    pub code: &'static str,
    /// One-line description.
    pub message: String,
    /// Where the error is.
    pub span: Span,
    /// Short text shown under the caret.
    pub label: String,
    /// Extra lines: hints, then the chain of block calls that led here (innermost first).
    pub notes: Vec<Note>,
}

/// One extra line under a diagnostic.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Note {
    /// A hint in words.
    Text(String),
    /// The error happened inside this block, called at this span.
    CalledFrom(String, Span),
}

impl Diagnostic {
    /// A diagnostic with no label or notes.
    pub fn new(code: &'static str, span: Span, message: impl Into<String>) -> Diagnostic {
        Diagnostic {
            code,
            message: message.into(),
            span,
            label: String::new(),
            notes: Vec::new(),
        }
    }

    /// Records that the error happened inside block `block`, called at `call`.
    pub fn called_from(mut self, block: &str, call: Span) -> Diagnostic {
        self.notes.push(Note::CalledFrom(block.to_string(), call));
        self
    }

    /// Sets the text under the caret.
    pub fn label(mut self, label: impl Into<String>) -> Diagnostic {
        self.label = label.into();
        self
    }

    /// Adds a note line.
    pub fn note(mut self, note: impl Into<String>) -> Diagnostic {
        self.notes.push(Note::Text(note.into()));
        self
    }

    /// Renders the diagnostic like rustc: header, `--> file:line:col`, the line, a caret.
    pub fn render(&self, sources: &Sources) -> String {
        let src = sources.get(self.span.source);
        let start = src.line_col(self.span.start as usize);
        let end = src.line_col(self.span.end as usize);
        let line = src.line_text(start.line);
        let gutter = start.line.to_string().len();
        let width = if end.line == start.line {
            end.col.saturating_sub(start.col).max(1)
        } else {
            line.chars().count().saturating_sub(start.col - 1).max(1)
        };
        let mut out = String::new();
        let pad = " ".repeat(gutter);
        let _ = writeln!(out, "error[{}]: {}", self.code, self.message);
        let _ = writeln!(out, "{pad}--> {}:{}", src.name, start);
        let _ = writeln!(out, "{pad} |");
        let (shown, col, width) = window(&line.replace('\t', " "), start.col - 1, width);
        let _ = writeln!(out, "{} | {}", start.line, shown);
        let caret_pad = " ".repeat(col);
        let carets = "^".repeat(width);
        let label = if self.label.is_empty() {
            String::new()
        } else {
            format!(" {}", self.label)
        };
        let _ = writeln!(out, "{pad} | {caret_pad}{carets}{label}");
        for n in &self.notes {
            let _ = match n {
                Note::Text(t) => writeln!(out, "{pad} = note: {t}"),
                Note::CalledFrom(block, call) => writeln!(
                    out,
                    "{pad} = note: in block `{block}`, called at {}",
                    sources.locate(*call)
                ),
            };
        }
        out
    }
}

/// The widest source line a diagnostic shows whole.
const MAX_SHOWN: usize = 120;

/// The part of a long `line` around the span at character `col` of `width` characters: at most
/// [`MAX_SHOWN`] characters with `…` where it was cut, and the span's column and width in it.
fn window(line: &str, col: usize, width: usize) -> (String, usize, usize) {
    let chars: Vec<char> = line.chars().collect();
    if chars.len() <= MAX_SHOWN {
        return (line.to_string(), col, width);
    }
    let from = col.saturating_sub(MAX_SHOWN / 3);
    let to = (from + MAX_SHOWN).min(chars.len());
    let mut shown = String::new();
    if from > 0 {
        shown.push('…');
    }
    shown.extend(&chars[from..to]);
    if to < chars.len() {
        shown.push('…');
    }
    let col = col - from + usize::from(from > 0);
    let width = width.min(shown.chars().count().saturating_sub(col)).max(1);
    (shown, col, width)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_line_and_caret() {
        let mut s = Sources::new();
        let id = s.add("m.arch", "model m {\n  x = foo(y)\n}\n");
        let d = Diagnostic::new("E0201", Span::new(id, 16, 19), "unknown name `foo`")
            .label("not defined")
            .note("a hint");
        let text = d.render(&s);
        assert_eq!(
            text,
            "error[E0201]: unknown name `foo`\n --> m.arch:2:7\n  |\n2 |   x = foo(y)\n  |       ^^^ not defined\n  = note: a hint\n"
        );
    }

    #[test]
    fn long_lines_are_cut_around_the_span() {
        let line = format!("{}bad{}", "a".repeat(500), "b".repeat(500));
        let (shown, col, width) = window(&line, 500, 3);
        assert_eq!(shown.chars().count(), MAX_SHOWN + 2);
        assert_eq!(
            shown.chars().skip(col).take(width).collect::<String>(),
            "bad"
        );
    }
}
