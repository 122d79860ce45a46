//! A scan of the raw text before parsing, for the two shapes that would make the recursive
//! descent itself overflow the stack: brackets nested too deep, and long runs of prefix
//! operators (`- - - x`, `not not x`), which the Pratt parser folds by recursion. Everything
//! else that nests is bounded by [`super::parser::MAX_EXPR_DEPTH`] as the tree is built.

use super::diagnostic::Diagnostic;
use super::source::{SourceId, Span};

/// How deeply `(`, `[` and `{` may nest.
pub const MAX_NESTING: usize = 128;

/// How many prefix operators may follow one another.
pub const MAX_PREFIX_RUN: usize = 64;

/// Checks the nesting of brackets and runs of prefix operators in `text`, skipping comments
/// and strings; the first violation is a located error.
pub fn check(source: SourceId, text: &str) -> Result<(), Diagnostic> {
    let bytes = text.as_bytes();
    let mut depth = 0usize;
    let mut run = 0usize;
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[i];
        match c {
            b'#' => {
                i = skip_until(bytes, i, |b| b == b'\n');
                continue;
            }
            b'"' => {
                i = skip_until(bytes, i + 1, |b| b == b'"' || b == b'\n') + 1;
                run = 0;
                continue;
            }
            b'(' | b'[' | b'{' => {
                depth += 1;
                if depth > MAX_NESTING {
                    return Err(Diagnostic::new(
                        "E0003",
                        Span::new(source, i, i + 1),
                        format!("brackets nest more than {MAX_NESTING} levels deep"),
                    )
                    .label("too deep")
                    .note("name the intermediate results: `a = ...` on lines of their own"));
                }
                run = 0;
            }
            b')' | b']' | b'}' => {
                depth = depth.saturating_sub(1);
                run = 0;
            }
            b'-' => run += 1,
            b'n' if is_word_at(bytes, i, b"not") => {
                run += 1;
                i += 2;
            }
            _ if c.is_ascii_whitespace() => {}
            _ => {
                // Skip the rest of a word, so that `knot` is not read as `not`.
                i = skip_until(bytes, i, |b| !(b.is_ascii_alphanumeric() || b == b'_')).max(i + 1);
                run = 0;
                continue;
            }
        }
        if run > MAX_PREFIX_RUN {
            return Err(Diagnostic::new(
                "E0003",
                Span::new(source, i, i + 1),
                format!("more than {MAX_PREFIX_RUN} operators in a row"),
            )
            .label("too many"));
        }
        i += 1;
    }
    Ok(())
}

/// The index of the first byte at or after `i` for which `stop` holds, or the end.
fn skip_until(bytes: &[u8], i: usize, stop: impl Fn(u8) -> bool) -> usize {
    bytes[i.min(bytes.len())..]
        .iter()
        .position(|&b| stop(b))
        .map_or(bytes.len(), |p| i + p)
}

/// Whether the word `word` (and not a longer identifier) starts at `i`.
fn is_word_at(bytes: &[u8], i: usize, word: &[u8]) -> bool {
    let end = i + word.len();
    let ident = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    bytes.get(i..end) == Some(word)
        && bytes.get(end).is_none_or(|&b| !ident(b))
        && (i == 0 || !ident(bytes[i - 1]))
}
