//! Errors a person reads: what went wrong, where (file:line:column with a snippet of the
//! source) and what to do about it. Every input error of lifeboat ends up as a
//! [`SourceError`] (one place) or an [`InputErrors`] (several, reported together).

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// A file's text kept for error snippets.
#[derive(Debug, Clone)]
pub struct SourceFile {
    /// The path as the user gave it (or as it was found).
    pub path: PathBuf,
    /// The whole text.
    pub text: Arc<str>,
}

impl SourceFile {
    /// Wraps a file's path and text.
    pub fn new(path: impl Into<PathBuf>, text: impl Into<Arc<str>>) -> Self {
        SourceFile {
            path: path.into(),
            text: text.into(),
        }
    }

    /// Reads a file, with an error that names it.
    pub fn read(path: &Path) -> Result<Self, SourceError> {
        match std::fs::read_to_string(path) {
            Ok(text) => Ok(SourceFile::new(path, text)),
            Err(e) => Err(
                SourceError::plain(format!("cannot read {}: {e}", path.display()))
                    .with_help("check the path and that the file is readable"),
            ),
        }
    }

    /// The text of a 1-based line, if there is one.
    pub fn line(&self, line: usize) -> Option<&str> {
        if line == 0 {
            return None;
        }
        self.text.lines().nth(line - 1)
    }
}

/// A position in a source file, 1-based like editors show it.
#[derive(Debug, Clone)]
pub struct Location {
    /// The file.
    pub file: SourceFile,
    /// 1-based line.
    pub line: usize,
    /// 1-based column.
    pub column: usize,
    /// How many characters to underline (at least one).
    pub len: usize,
}

impl Location {
    /// A location in `file`.
    pub fn new(file: &SourceFile, line: usize, column: usize, len: usize) -> Self {
        Location {
            file: file.clone(),
            line: line.max(1),
            column: column.max(1),
            len: len.max(1),
        }
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}",
            self.file.path.display(),
            self.line,
            self.column
        )
    }
}

/// One error in the user's input, located when it can be.
#[derive(Debug, Clone)]
pub struct SourceError {
    /// What is wrong, in one sentence.
    pub message: String,
    /// Where, when known.
    pub location: Option<Location>,
    /// What to do about it.
    pub help: Option<String>,
}

impl SourceError {
    /// An error at a place in a file.
    pub fn at(location: Location, message: impl Into<String>) -> Self {
        SourceError {
            message: message.into(),
            location: Some(location),
            help: None,
        }
    }

    /// An error with no place in a file (a missing file, a bad command-line value).
    pub fn plain(message: impl Into<String>) -> Self {
        SourceError {
            message: message.into(),
            location: None,
            help: None,
        }
    }

    /// Adds advice on what to do.
    pub fn with_help(mut self, help: impl Into<String>) -> Self {
        self.help = Some(help.into());
        self
    }
}

impl fmt::Display for SourceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "error: {}", self.message)?;
        if let Some(loc) = &self.location {
            writeln!(f, "  --> {loc}")?;
            if let Some(text) = loc.file.line(loc.line) {
                let num = loc.line.to_string();
                let pad = " ".repeat(num.len());
                writeln!(f, "{pad} |")?;
                writeln!(f, "{num} | {text}")?;
                let before: String = text
                    .chars()
                    .take(loc.column.saturating_sub(1))
                    .map(|c| if c == '\t' { '\t' } else { ' ' })
                    .collect();
                let avail = text.chars().count().saturating_sub(loc.column - 1).max(1);
                writeln!(f, "{pad} | {before}{}", "^".repeat(loc.len.min(avail)))?;
            }
        }
        if let Some(help) = &self.help {
            writeln!(f, "  = help: {help}")?;
        }
        Ok(())
    }
}

impl std::error::Error for SourceError {}

/// Several input errors, reported together so a user fixes them in one pass.
#[derive(Debug, Clone, Default)]
pub struct InputErrors(pub Vec<SourceError>);

impl InputErrors {
    /// Adds one error.
    pub fn push(&mut self, e: SourceError) {
        self.0.push(e);
    }

    /// Adds all errors of another list.
    pub fn extend(&mut self, other: InputErrors) {
        self.0.extend(other.0);
    }

    /// True when nothing was reported.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// `Ok(value)` when empty, else `Err(self)`.
    pub fn into_result<T>(self, value: T) -> Result<T, InputErrors> {
        if self.0.is_empty() {
            Ok(value)
        } else {
            Err(self)
        }
    }
}

impl From<SourceError> for InputErrors {
    fn from(e: SourceError) -> Self {
        InputErrors(vec![e])
    }
}

impl fmt::Display for InputErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        if self.0.len() > 1 {
            writeln!(f, "\n{} errors", self.0.len())?;
        }
        Ok(())
    }
}

impl std::error::Error for InputErrors {}

/// The closest candidate to a misspelt name, for "did you mean" advice.
pub fn did_you_mean<'a>(
    name: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    candidates
        .into_iter()
        .map(|c| (strsim_distance(name, c), c))
        .filter(|(d, c)| *d <= 2.max(c.len() / 3))
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

/// Levenshtein distance; names are short so the quadratic cost is nothing.
fn strsim_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != *cb);
            cur.push((prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_location_snippet_and_help() {
        let file = SourceFile::new("play.yml", "steps:\n  - id: a\n    neds: [b]\n");
        let e = SourceError::at(Location::new(&file, 3, 5, 4), "unknown key `neds`")
            .with_help("did you mean `needs`?");
        let text = e.to_string();
        assert!(text.contains("error: unknown key `neds`"), "{text}");
        assert!(text.contains("--> play.yml:3:5"), "{text}");
        assert!(text.contains("3 |     neds: [b]"), "{text}");
        assert!(text.contains("  |     ^^^^"), "{text}");
        assert!(text.contains("= help: did you mean `needs`?"), "{text}");
    }

    #[test]
    fn suggests_close_names_only() {
        assert_eq!(did_you_mean("neds", ["needs", "name"]), Some("needs"));
        assert_eq!(did_you_mean("zzzzzz", ["needs", "name"]), None);
    }
}
