//! YAML as a tree of located nodes. Playbooks and inventories are read into [`Node`]s
//! first, so that every later check (an unknown key, a `needs` naming no step, a value
//! of the wrong type) can point at the file, line and column where the user wrote it.
//! Parsing is serde-saphyr's, with strict booleans (`yes` stays a string) and numbers
//! with a leading zero kept as strings (file modes such as `0755`).

use std::fmt;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_saphyr::Spanned;

use crate::error::{Location, SourceError, SourceFile};

/// A YAML value with the place it was written.
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    /// The value.
    pub value: Value,
    /// 1-based line.
    pub line: usize,
    /// 1-based column.
    pub column: usize,
}

/// The shapes a YAML value can take.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// `~`, `null` or nothing.
    Null,
    /// `true` / `false`.
    Bool(bool),
    /// A whole number.
    Int(i64),
    /// A floating-point number.
    Float(f64),
    /// A string.
    Str(String),
    /// A sequence.
    Seq(Vec<Node>),
    /// A mapping, in the order written; keys are nodes so they can be pointed at.
    Map(Vec<(Node, Node)>),
}

impl Node {
    /// A node with no place (made by code, not read from a file).
    pub fn synthetic(value: Value) -> Self {
        Node {
            value,
            line: 0,
            column: 0,
        }
    }

    /// Where this node is in `file`, underlining `len` characters.
    pub fn location(&self, file: &SourceFile) -> Location {
        Location::new(file, self.line, self.column, self.display_len())
    }

    /// An error pointing at this node.
    pub fn error(&self, file: &SourceFile, message: impl Into<String>) -> SourceError {
        SourceError::at(self.location(file), message)
    }

    fn display_len(&self) -> usize {
        match &self.value {
            Value::Str(s) if !s.contains('\n') => s.chars().count().max(1),
            Value::Bool(b) => b.to_string().len(),
            Value::Int(i) => i.to_string().len(),
            _ => 1,
        }
    }

    /// The string, if this is one.
    pub fn as_str(&self) -> Option<&str> {
        match &self.value {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }

    /// The entries, if this is a mapping.
    pub fn as_map(&self) -> Option<&[(Node, Node)]> {
        match &self.value {
            Value::Map(m) => Some(m),
            _ => None,
        }
    }

    /// The items, if this is a sequence.
    pub fn as_seq(&self) -> Option<&[Node]> {
        match &self.value {
            Value::Seq(s) => Some(s),
            _ => None,
        }
    }

    /// The value under a string key of a mapping.
    pub fn get(&self, key: &str) -> Option<&Node> {
        self.as_map()?
            .iter()
            .find(|(k, _)| k.as_str() == Some(key))
            .map(|(_, v)| v)
    }

    /// A word for this node's kind, for "expected X, found Y" messages.
    pub fn kind(&self) -> &'static str {
        match &self.value {
            Value::Null => "nothing (null)",
            Value::Bool(_) => "a boolean",
            Value::Int(_) => "a whole number",
            Value::Float(_) => "a number",
            Value::Str(_) => "a string",
            Value::Seq(_) => "a list",
            Value::Map(_) => "a mapping",
        }
    }

    /// The scalar as text (strings, numbers, booleans), as a key or a word would be read.
    pub fn scalar_text(&self) -> Option<String> {
        match &self.value {
            Value::Str(s) => Some(s.clone()),
            Value::Int(i) => Some(i.to_string()),
            Value::Float(f) => Some(f.to_string()),
            Value::Bool(b) => Some(b.to_string()),
            _ => None,
        }
    }

    /// The node as plain JSON data (for variables and module arguments).
    pub fn to_json(&self) -> serde_json::Value {
        use serde_json::Value as J;
        match &self.value {
            Value::Null => J::Null,
            Value::Bool(b) => J::Bool(*b),
            Value::Int(i) => J::from(*i),
            Value::Float(f) => serde_json::Number::from_f64(*f).map_or(J::Null, J::Number),
            Value::Str(s) => J::String(s.clone()),
            Value::Seq(items) => J::Array(items.iter().map(Node::to_json).collect()),
            Value::Map(entries) => J::Object(
                entries
                    .iter()
                    .map(|(k, v)| (k.scalar_text().unwrap_or_default(), v.to_json()))
                    .collect(),
            ),
        }
    }
}

/// How deep YAML may nest (mappings and lists inside each other). Real playbooks and
/// inventories stay far below it; deeper input is refused with an error.
pub const MAX_DEPTH: usize = 64;

/// Stack of the thread that reads YAML: deserialising takes stack per level of nesting
/// (a lot in debug builds), more than a test thread's default 2 MiB at [`MAX_DEPTH`].
const PARSE_STACK: usize = 64 << 20;

/// Parses a YAML document of `file` into a located tree. An empty document is `Null`.
/// Hostile input (nesting deeper than [`MAX_DEPTH`], alias bombs, huge documents) ends
/// in a located error, never in a crash.
pub fn parse(file: &SourceFile) -> Result<Node, SourceError> {
    if file.text.trim().is_empty() {
        return Ok(Node {
            value: Value::Null,
            line: 1,
            column: 1,
        });
    }
    let text = &*file.text;
    let outcome = std::thread::scope(|scope| {
        std::thread::Builder::new()
            .name("yaml".into())
            .stack_size(PARSE_STACK)
            .spawn_scoped(scope, || parse_text(text))
            .map(|h| h.join())
    });
    let result = match outcome {
        Ok(Ok(result)) => result,
        // The parser panicked on this input.
        Ok(Err(_)) => Err((
            Some((1, 1)),
            "the YAML parser failed on this document".to_string(),
        )),
        // No thread to spare: read on this one.
        Err(_) => parse_text(text),
    };
    result.map_err(|(at, message)| match at {
        Some((line, column)) => SourceError::at(
            Location::new(file, line, column, 1),
            format!("invalid YAML: {message}"),
        )
        .with_help("fix the YAML syntax at this place"),
        None => SourceError::at(
            Location::new(file, 1, 1, 1),
            format!("invalid YAML: {message}"),
        )
        .with_help("fix the YAML syntax of this file"),
    })
}

/// Parses a YAML document as Ansible reads inventories and `group_vars/` files
/// (PyYAML, YAML 1.1): an unquoted value `yes`/`no`/`on`/`off` is a boolean, `0755`
/// octal (493), `1_000` and `1:30` (base 60: 90) numbers, and a float needs its dot
/// (`1e3` and `0o17` stay text). Quoted and block values are text, as written; keys
/// are left as read.
pub fn parse_yaml11(file: &SourceFile) -> Result<Node, SourceError> {
    let mut root = parse(file)?;
    // Ansible reads a JSON document as JSON first.
    if serde_json::from_str::<serde_json::Value>(&file.text).is_ok() {
        return Ok(root);
    }
    let lines: Vec<&str> = file.text.lines().collect();
    resolve_yaml11(&mut root, &lines);
    Ok(root)
}

fn resolve_yaml11(node: &mut Node, lines: &[&str]) {
    match &mut node.value {
        Value::Seq(items) => items.iter_mut().for_each(|n| resolve_yaml11(n, lines)),
        Value::Map(entries) => entries
            .iter_mut()
            .for_each(|(_, v)| resolve_yaml11(v, lines)),
        _ => {
            if let Some(text) = plain_text(node, lines)
                && let Some(v) = yaml11::resolve(&text)
            {
                node.value = v;
            }
        }
    }
}

/// The text of a plain (unquoted, untagged, single-line) scalar as written, or `None`.
fn plain_text(node: &Node, lines: &[&str]) -> Option<String> {
    let line = lines.get(node.line.checked_sub(1)?)?;
    let rest: String = line.chars().skip(node.column.checked_sub(1)?).collect();
    let first = rest.chars().next()?;
    if matches!(first, '\'' | '"' | '|' | '>' | '!' | '&' | '*' | '[' | '{') {
        return None;
    }
    match &node.value {
        // A plain string is its own text (multi-line ones fold into spaces and match
        // no YAML 1.1 type).
        Value::Str(s) => Some(s.clone()),
        Value::Null if first == '~' || first.is_alphabetic() => Some(first_word(&rest)),
        Value::Null => None,
        _ => Some(first_word(&rest)),
    }
}

/// A number or word up to the end of the scalar: whitespace, a flow indicator, or
/// `: ` (a key).
fn first_word(rest: &str) -> String {
    let chars: Vec<char> = rest.chars().collect();
    let mut end = 0;
    while end < chars.len() {
        let c = chars[end];
        if c.is_whitespace()
            || matches!(c, ',' | ']' | '}')
            || (c == ':' && chars.get(end + 1).is_none_or(|n| n.is_whitespace()))
        {
            break;
        }
        end += 1;
    }
    chars[..end].iter().collect()
}

/// PyYAML's implicit types for plain scalars (its `Resolver`, YAML 1.1).
mod yaml11 {
    use std::sync::LazyLock;

    use regex::Regex;

    use super::Value;

    static FLOAT: LazyLock<Option<Regex>> = LazyLock::new(|| {
        Regex::new(
            r"^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+][0-9]+)?|\.[0-9_]+(?:[eE][-+][0-9]+)?|[-+]?[0-9][0-9_]*(?::[0-5]?[0-9])+\.[0-9_]*|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$",
        )
        .ok()
    });
    static INT: LazyLock<Option<Regex>> = LazyLock::new(|| {
        Regex::new(
            r"^(?:[-+]?0b[0-1_]+|[-+]?0[0-7_]+|[-+]?(?:0|[1-9][0-9_]*)|[-+]?0x[0-9a-fA-F_]+|[-+]?[1-9][0-9_]*(?::[0-5]?[0-9])+)$",
        )
        .ok()
    });

    /// The typed value of plain text, or `None` for a string.
    pub(super) fn resolve(text: &str) -> Option<Value> {
        match text {
            "yes" | "Yes" | "YES" | "true" | "True" | "TRUE" | "on" | "On" | "ON" => {
                return Some(Value::Bool(true));
            }
            "no" | "No" | "NO" | "false" | "False" | "FALSE" | "off" | "Off" | "OFF" => {
                return Some(Value::Bool(false));
            }
            "~" | "null" | "Null" | "NULL" | "" => return Some(Value::Null),
            _ => {}
        }
        if FLOAT.as_ref().is_some_and(|r| r.is_match(text)) {
            return float(text);
        }
        if INT.as_ref().is_some_and(|r| r.is_match(text)) {
            return int(text);
        }
        Some(Value::Str(text.to_string()))
    }

    fn sign(text: &str) -> (f64, String) {
        let t = text.replace('_', "");
        match t.strip_prefix('-') {
            Some(rest) => (-1.0, rest.to_string()),
            None => (1.0, t.strip_prefix('+').unwrap_or(&t).to_string()),
        }
    }

    /// Base-60 digits (`1:30` is 90).
    fn sexagesimal(t: &str) -> Option<f64> {
        let mut v = 0.0;
        for part in t.split(':') {
            v = v * 60.0 + part.parse::<f64>().ok()?;
        }
        Some(v)
    }

    fn float(text: &str) -> Option<Value> {
        let (sign, t) = sign(text);
        let t = t.to_ascii_lowercase();
        let v = match t.as_str() {
            ".inf" => f64::INFINITY,
            ".nan" => f64::NAN,
            _ if t.contains(':') => sexagesimal(&t)?,
            _ => t.parse::<f64>().ok()?,
        };
        Some(Value::Float(sign * v))
    }

    fn int(text: &str) -> Option<Value> {
        let (sign, t) = sign(text);
        let magnitude = if t == "0" {
            0
        } else if let Some(b) = t.strip_prefix("0b") {
            i64::from_str_radix(b, 2).ok()?
        } else if let Some(h) = t.strip_prefix("0x") {
            i64::from_str_radix(h, 16).ok()?
        } else if t.starts_with('0') {
            i64::from_str_radix(&t, 8).ok()?
        } else if t.contains(':') {
            return Some(Value::Int(sign as i64 * sexagesimal(&t)? as i64));
        } else {
            t.parse::<i64>().ok()?
        };
        Some(Value::Int(sign as i64 * magnitude))
    }
}

/// Converts the parser's places (YAML counts a lone `\r` as a line break too) into
/// lines as counted everywhere else (`\n`, `\r\n`), so snippets show the right line.
struct Lines<'a> {
    text: &'a str,
    /// Byte offset where each of the parser's lines starts.
    yaml_starts: Vec<usize>,
    /// Byte offset where each of our lines starts.
    starts: Vec<usize>,
}

impl<'a> Lines<'a> {
    /// `None` when both count alike (no lone `\r`): nothing to convert.
    fn new(text: &'a str) -> Option<Lines<'a>> {
        let bytes = text.as_bytes();
        let lone_cr = |i: usize| bytes[i] == b'\r' && bytes.get(i + 1).is_none_or(|b| *b != b'\n');
        if !(0..bytes.len()).any(lone_cr) {
            return None;
        }
        let mut yaml_starts = vec![0];
        let mut starts = vec![0];
        for (i, b) in bytes.iter().enumerate() {
            if *b == b'\n' {
                yaml_starts.push(i + 1);
                starts.push(i + 1);
            } else if lone_cr(i) {
                yaml_starts.push(i + 1);
            }
        }
        Some(Lines {
            text,
            yaml_starts,
            starts,
        })
    }

    /// Our (line, column) of the parser's (line, column), all 1-based, columns in chars.
    fn convert(&self, line: usize, column: usize) -> (usize, usize) {
        let start = self
            .yaml_starts
            .get(line.saturating_sub(1))
            .copied()
            .unwrap_or(self.text.len());
        let offset = self.text[start..]
            .char_indices()
            .nth(column.saturating_sub(1))
            .map_or(self.text.len(), |(o, _)| start + o);
        let idx = self.starts.partition_point(|&s| s <= offset).max(1) - 1;
        let col = self.text[self.starts[idx]..offset].chars().count() + 1;
        (idx + 1, col)
    }

    fn fix(&self, node: &mut Node) {
        if node.line > 0 {
            (node.line, node.column) = self.convert(node.line, node.column);
        }
        match &mut node.value {
            Value::Seq(items) => items.iter_mut().for_each(|n| self.fix(n)),
            Value::Map(entries) => entries.iter_mut().for_each(|(k, v)| {
                self.fix(k);
                self.fix(v);
            }),
            _ => {}
        }
    }
}

/// A parse error: where (line, column), when the parser knows, and what.
type ParseError = (Option<(usize, usize)>, String);

fn parse_text(text: &str) -> Result<Node, ParseError> {
    let options = serde_saphyr::options! {
        strict_booleans: true,
        leading_zero_numbers_as_strings: true,
        budget: serde_saphyr::budget! { max_depth: MAX_DEPTH },
    };
    let lines = Lines::new(text);
    match serde_saphyr::from_str_with_options::<Spanned<Value>>(text, options) {
        Ok(spanned) => {
            let mut node = from_spanned(spanned);
            if let Some(lines) = &lines {
                lines.fix(&mut node);
            }
            Ok(node)
        }
        Err(e) => {
            let message = readable(&first_line(&e.to_string()));
            let at = e.location().map(|loc| {
                let (line, column) = (loc.line() as usize, loc.column() as usize);
                lines
                    .as_ref()
                    .map_or((line, column), |l| l.convert(line, column))
            });
            Err((at, message))
        }
    }
}

/// The parser's message without the place it repeats, and its limits in words.
fn readable(message: &str) -> String {
    let mut m = message.trim_start_matches("error:").trim();
    // `what at line 3, column 7`: the place is shown on its own, counted our way.
    if let Some(at) = m.rfind(" at line ")
        && m[at..].contains(", column ")
    {
        m = &m[..at];
    }
    // `line 3 column 7: what`: the place is shown on its own.
    if let Some(rest) = m.strip_prefix("line ")
        && let Some((place, what)) = rest.split_once(": ")
        && place
            .chars()
            .all(|c| c.is_ascii_digit() || c == ' ' || c.is_ascii_alphabetic())
    {
        m = what;
    }
    if m.contains("budget breached: Depth") || m.contains("recursion limit exceeded") {
        return format!("nested deeper than {MAX_DEPTH} levels");
    }
    if let Some(what) = m.strip_prefix("budget breached: ") {
        return format!("the document is too large or repeats aliases too much ({what})");
    }
    m.to_string()
}

fn first_line(s: &str) -> String {
    s.lines().next().unwrap_or("").trim().to_string()
}

fn from_spanned(s: Spanned<Value>) -> Node {
    Node {
        value: s.value,
        line: s.referenced.line() as usize,
        column: s.referenced.column() as usize,
    }
}

impl<'de> Deserialize<'de> for Value {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(ValueVisitor)
    }
}

struct ValueVisitor;

impl<'de> Visitor<'de> for ValueVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any YAML value")
    }
    fn visit_unit<E: de::Error>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_none<E: de::Error>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        Value::deserialize(d)
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Value, E> {
        Ok(Value::Int(v))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Value, E> {
        Ok(i64::try_from(v).map_or(Value::Float(v as f64), Value::Int))
    }
    fn visit_i128<E: de::Error>(self, v: i128) -> Result<Value, E> {
        Ok(i64::try_from(v).map_or(Value::Float(v as f64), Value::Int))
    }
    fn visit_u128<E: de::Error>(self, v: u128) -> Result<Value, E> {
        Ok(i64::try_from(v).map_or(Value::Float(v as f64), Value::Int))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Value, E> {
        Ok(Value::Float(v))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Value, E> {
        Ok(Value::Str(v.to_string()))
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<Value, E> {
        Ok(Value::Str(v))
    }
    fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<Value, E> {
        Ok(Value::Str(String::from_utf8_lossy(v).into_owned()))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element::<Spanned<Value>>()? {
            items.push(from_spanned(item));
        }
        Ok(Value::Seq(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut entries = Vec::new();
        while let Some((k, v)) = map.next_entry::<Spanned<Value>, Spanned<Value>>()? {
            entries.push((from_spanned(k), from_spanned(v)));
        }
        Ok(Value::Map(entries))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc(text: &str) -> Node {
        parse(&SourceFile::new("t.yml", text)).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn keeps_positions_of_keys_and_values() {
        let root = doc("a: 1\nsteps:\n  - id: x\n    mode: \"0644\"\n");
        let steps = root.get("steps").and_then(Node::as_seq).unwrap_or(&[]);
        let step = &steps[0];
        let (k, v) = &step.as_map().unwrap_or(&[])[0];
        assert_eq!((k.line, k.column), (3, 5));
        assert_eq!((v.line, v.column), (3, 9));
        assert_eq!(v.as_str(), Some("x"));
    }

    #[test]
    fn yes_is_a_string_and_modes_keep_their_zero() {
        let root = doc("a: yes\nb: 0755\nc: true\nd: 12\n");
        assert_eq!(
            root.get("a").map(|n| n.value.clone()),
            Some(Value::Str("yes".into()))
        );
        assert_eq!(
            root.get("b").map(|n| n.value.clone()),
            Some(Value::Str("0755".into()))
        );
        assert_eq!(
            root.get("c").map(|n| n.value.clone()),
            Some(Value::Bool(true))
        );
        assert_eq!(root.get("d").map(|n| n.value.clone()), Some(Value::Int(12)));
    }

    #[test]
    fn deep_nesting_is_a_located_error_not_a_crash() {
        for text in [
            format!("a: {}{}\n", "[".repeat(100_000), "]".repeat(100_000)),
            format!("a: {}{}\n", "{b: ".repeat(100_000), "}".repeat(100_000)),
            (0..200)
                .map(|i| format!("{}- \n", " ".repeat(i * 2)))
                .collect(),
        ] {
            let e = parse(&SourceFile::new("deep.yml", text.as_str())).err();
            let text = e.map(|e| e.to_string()).unwrap_or_default();
            assert!(text.contains("nested deeper than 64 levels"), "{text}");
            assert!(text.contains("deep.yml:"), "{text}");
        }
        assert!(parse(&SourceFile::new("ok.yml", "a: [[[[1]]]]\n")).is_ok());
    }

    #[test]
    fn a_lone_carriage_return_does_not_move_the_place() {
        let file = SourceFile::new("cr.yml", "a: 1\rb: 2\r\nc: [\n");
        let e = parse(&file).err();
        let loc = e.as_ref().and_then(|e| e.location.clone());
        let lines = file.text.lines().count();
        assert!(loc.as_ref().is_some_and(|l| l.line <= lines + 1), "{e:?}");
        let root = parse(&SourceFile::new("cr.yml", "a: 1\rb: 2\nc: 3\n")).ok();
        let c = root
            .as_ref()
            .and_then(|r| r.get("c"))
            .map(|n| (n.line, n.column));
        assert_eq!(c, Some((2, 4)));
        let text = e.map(|e| e.to_string()).unwrap_or_default();
        assert!(!text.contains(" at line "), "{text}");
    }

    #[test]
    fn syntax_and_duplicate_key_errors_are_located() {
        let e = parse(&SourceFile::new("bad.yml", "a: 1\na: 2\n")).err();
        let text = e.map(|e| e.to_string()).unwrap_or_default();
        assert!(text.contains("bad.yml:2:"), "{text}");
        let e = parse(&SourceFile::new("bad.yml", "a: [1, 2\nb: 3\n")).err();
        assert!(e.is_some_and(|e| e.location.is_some()));
    }
}
