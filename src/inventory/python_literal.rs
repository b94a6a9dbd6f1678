//! Python literals, read as `ast.literal_eval` reads them: what Ansible's INI inventory
//! plugin does with every variable value (ansible-core 2.19), then converted as that
//! plugin converts them (tuples and sets become lists, complex numbers and `...` become
//! their text, bytes become text).
//!
//! [`eval`] gives `None` where `literal_eval` raises (a bare word, `1+2`, `010`,
//! `2024-01-01`, `true`): Ansible then keeps the text as it is, and so do we. Read by
//! hand rather than with the `py_literal` crate, which evaluates `2024-01-01` to 2022
//! and accepts `010`; each rule here is checked against Python itself in the tests.
//!
//! Not handled (rare in inventories, and then kept as text): `\N{NAME}` escapes, and
//! the iteration order of a literal set (kept as written, without duplicates).

use serde_json::{Map, Number, Value as Json};

/// The value of `text` as a Python literal, or `None` where Python would refuse it.
pub fn eval(text: &str) -> Option<Json> {
    let mut p = Parser {
        s: text.trim_start_matches([' ', '\t']).chars().collect(),
        i: 0,
        depth: 0,
    };
    let first = p.expr()?;
    p.skip_space();
    let value = if p.peek() == Some(',') {
        // A bare tuple: `1, 2`.
        let mut items = vec![first.into_json()?];
        while p.eat(',') {
            p.skip_space();
            if p.at_end() {
                break;
            }
            items.push(p.expr()?.into_json()?);
            p.skip_space();
        }
        Json::Array(items)
    } else {
        first.into_json()?
    };
    p.skip_space();
    p.at_end().then_some(value)
}

/// Nesting beyond this is refused (Python's own parser stops near 200).
const MAX_DEPTH: usize = 100;

/// A parsed literal before conversion: numbers keep their kind, for the sign and
/// complex rules of `literal_eval`.
enum Lit {
    Int(Json),
    Float(f64),
    Complex(f64, f64),
    Str(String),
    Bytes(Vec<u8>),
    Bool(bool),
    None,
    Ellipsis,
    List(Vec<Lit>),
    Dict(Vec<(Lit, Lit)>),
}

impl Lit {
    fn into_json(self) -> Option<Json> {
        Some(match self {
            Lit::Int(n) => n,
            Lit::Float(f) => Json::Number(Number::from_f64(f)?),
            Lit::Complex(re, im) => Json::String(complex_text(re, im)),
            Lit::Str(s) => Json::String(s),
            Lit::Bytes(b) => Json::String(String::from_utf8_lossy(&b).into_owned()),
            Lit::Bool(b) => Json::Bool(b),
            Lit::None => Json::Null,
            Lit::Ellipsis => Json::String("...".into()),
            Lit::List(items) => Json::Array(
                items
                    .into_iter()
                    .map(Lit::into_json)
                    .collect::<Option<_>>()?,
            ),
            Lit::Dict(entries) => {
                let mut map = Map::new();
                for (k, v) in entries {
                    map.insert(k.key_text()?, v.into_json()?);
                }
                Json::Object(map)
            }
        })
    }

    /// A dict key as JSON writes it (Python's `json.dumps`); lists and dicts cannot be
    /// keys (Python refuses them).
    fn key_text(self) -> Option<String> {
        match self.into_json()? {
            Json::String(s) => Some(s),
            Json::Number(n) => Some(n.to_string()),
            Json::Bool(b) => Some(b.to_string()),
            Json::Null => Some("null".into()),
            _ => None,
        }
    }
}

/// Python's `str(complex)`: `1j`, `(1+2j)`, `(1.5-0.5j)`.
fn complex_text(re: f64, im: f64) -> String {
    let num = |x: f64| {
        if x.fract() == 0.0 && x.abs() < 1e16 {
            format!("{}", x as i64)
        } else {
            format!("{x}")
        }
    };
    if re == 0.0 && re.is_sign_positive() {
        format!("{}j", num(im))
    } else {
        let sign = if im.is_sign_negative() { '-' } else { '+' };
        let re_text = if re == 0.0 { "-0".to_string() } else { num(re) };
        format!("({re_text}{sign}{}j)", num(im.abs()))
    }
}

struct Parser {
    s: Vec<char>,
    i: usize,
    depth: usize,
}

impl Parser {
    fn peek(&self) -> Option<char> {
        self.s.get(self.i).copied()
    }

    fn peek_at(&self, ahead: usize) -> Option<char> {
        self.s.get(self.i + ahead).copied()
    }

    fn at_end(&self) -> bool {
        self.i >= self.s.len()
    }

    fn eat(&mut self, c: char) -> bool {
        if self.peek() == Some(c) {
            self.i += 1;
            true
        } else {
            false
        }
    }

    /// Spaces, tabs, form feeds and a `#` comment to the end.
    fn skip_space(&mut self) {
        while let Some(c) = self.peek() {
            match c {
                ' ' | '\t' | '\x0c' | '\n' | '\r' => self.i += 1,
                '#' => self.i = self.s.len(),
                _ => break,
            }
        }
    }

    /// One expression: a literal, a signed number, or `number ± imaginary`.
    fn expr(&mut self) -> Option<Lit> {
        self.skip_space();
        let left = if matches!(self.peek(), Some('+' | '-')) {
            self.signed()?
        } else {
            self.atom()?
        };
        self.skip_space();
        match self.peek() {
            Some(op @ ('+' | '-')) => {
                // Only int/float ± complex: `1+2j`, `-1.5-3j`.
                let re = match left {
                    Lit::Int(ref n) => n.as_f64()?,
                    Lit::Float(f) => f,
                    _ => return None,
                };
                self.i += 1;
                self.skip_space();
                let Lit::Complex(_, im) = self.number()? else {
                    return None;
                };
                Some(Lit::Complex(re, if op == '-' { -im } else { im }))
            }
            _ => Some(left),
        }
    }

    /// `-1`, `+1.5`, `-2j`: a sign directly applied to a number.
    fn signed(&mut self) -> Option<Lit> {
        let negative = self.peek() == Some('-');
        self.i += 1;
        self.skip_space();
        Some(match self.number()? {
            Lit::Int(n) if negative => Lit::Int(negate(&n)?),
            Lit::Float(f) if negative => Lit::Float(-f),
            Lit::Complex(re, im) if negative => Lit::Complex(-re, -im),
            other => other,
        })
    }

    fn atom(&mut self) -> Option<Lit> {
        self.skip_space();
        let c = self.peek()?;
        if c.is_ascii_digit() || (c == '.' && self.peek_at(1).is_some_and(|d| d.is_ascii_digit())) {
            return self.number();
        }
        if c == '.' {
            return (self.peek_at(1) == Some('.') && self.peek_at(2) == Some('.')).then(|| {
                self.i += 3;
                Lit::Ellipsis
            });
        }
        if c == '\'' || c == '"' || self.string_prefix_len().is_some() {
            return self.strings();
        }
        if c.is_alphabetic() || c == '_' {
            let start = self.i;
            while self.peek().is_some_and(|c| c.is_alphanumeric() || c == '_') {
                self.i += 1;
            }
            let word: String = self.s[start..self.i].iter().collect();
            return match word.as_str() {
                "True" => Some(Lit::Bool(true)),
                "False" => Some(Lit::Bool(false)),
                "None" => Some(Lit::None),
                "set" => {
                    // `set()`: the empty set.
                    self.skip_space();
                    if !self.eat('(') {
                        return None;
                    }
                    self.skip_space();
                    self.eat(')').then_some(Lit::List(Vec::new()))
                }
                _ => None,
            };
        }
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return None;
        }
        let out = match c {
            '(' => self.paren(),
            '[' => {
                self.i += 1;
                self.items(']').map(Lit::List)
            }
            '{' => self.brace(),
            _ => None,
        };
        self.depth -= 1;
        out
    }

    /// Comma-separated expressions up to `close`, a trailing comma allowed.
    fn items(&mut self, close: char) -> Option<Vec<Lit>> {
        let mut out = Vec::new();
        loop {
            self.skip_space();
            if self.eat(close) {
                return Some(out);
            }
            out.push(self.expr()?);
            self.skip_space();
            if self.eat(close) {
                return Some(out);
            }
            if !self.eat(',') {
                return None;
            }
        }
    }

    /// `()`, `(x)` (just x), `(x,)` and `(x, y)` (tuples, read as lists).
    fn paren(&mut self) -> Option<Lit> {
        self.i += 1;
        self.skip_space();
        if self.eat(')') {
            return Some(Lit::List(Vec::new()));
        }
        let first = self.expr()?;
        self.skip_space();
        if self.eat(')') {
            return Some(first);
        }
        if !self.eat(',') {
            return None;
        }
        let mut rest = self.items(')')?;
        rest.insert(0, first);
        Some(Lit::List(rest))
    }

    /// `{}` and `{k: v, ...}` (dicts), `{a, b}` (a set, read as a list without
    /// duplicates).
    fn brace(&mut self) -> Option<Lit> {
        self.i += 1;
        self.skip_space();
        if self.eat('}') {
            return Some(Lit::Dict(Vec::new()));
        }
        let first = self.expr()?;
        self.skip_space();
        if self.eat(':') {
            let mut entries = vec![(first, self.expr()?)];
            loop {
                self.skip_space();
                if self.eat('}') {
                    return Some(Lit::Dict(entries));
                }
                if !self.eat(',') {
                    return None;
                }
                self.skip_space();
                if self.eat('}') {
                    return Some(Lit::Dict(entries));
                }
                let k = self.expr()?;
                self.skip_space();
                if !self.eat(':') {
                    return None;
                }
                entries.push((k, self.expr()?));
            }
        }
        let mut items = vec![first];
        self.skip_space();
        if !self.eat('}') {
            if !self.eat(',') {
                return None;
            }
            items.extend(self.items('}')?);
        }
        // Python refuses unhashable members (lists, dicts).
        let mut seen: Vec<Json> = Vec::new();
        let mut out = Vec::new();
        for item in items {
            if matches!(item, Lit::List(_) | Lit::Dict(_)) {
                return None;
            }
            let j = item.into_json()?;
            if !seen.contains(&j) {
                seen.push(j.clone());
                out.push(json_lit(j));
            }
        }
        Some(Lit::List(out))
    }

    /// Digits with single `_` between them, in `radix`; returns the digits without `_`.
    fn digits(&mut self, radix: u32) -> Option<String> {
        let mut out = String::new();
        loop {
            match self.peek() {
                Some(c) if c.is_digit(radix) => {
                    out.push(c);
                    self.i += 1;
                }
                Some('_')
                    if !out.is_empty() && self.peek_at(1).is_some_and(|d| d.is_digit(radix)) =>
                {
                    self.i += 1;
                }
                _ => break,
            }
        }
        (!out.is_empty()).then_some(out)
    }

    /// A number token: int (decimal, `0x`, `0o`, `0b`), float or imaginary.
    fn number(&mut self) -> Option<Lit> {
        let c = self.peek()?;
        if c == '0'
            && let Some(radix) = match self.peek_at(1) {
                Some('x' | 'X') => Some(16),
                Some('o' | 'O') => Some(8),
                Some('b' | 'B') => Some(2),
                _ => None,
            }
        {
            self.i += 2;
            self.eat('_');
            let digits = self.digits(radix)?;
            self.end_of_number()?;
            return int_lit(u128::from_str_radix(&digits, radix).ok()?);
        }
        let whole = if c.is_ascii_digit() {
            self.digits(10)?
        } else {
            String::new()
        };
        let mut is_float = false;
        let mut text = whole.clone();
        if self.peek() == Some('.') {
            self.i += 1;
            is_float = true;
            text.push('.');
            if self.peek().is_some_and(|d| d.is_ascii_digit()) {
                text.push_str(&self.digits(10)?);
            } else if whole.is_empty() {
                return None;
            }
        }
        if matches!(self.peek(), Some('e' | 'E')) {
            self.i += 1;
            is_float = true;
            text.push('e');
            if let Some(sign @ ('+' | '-')) = self.peek() {
                self.i += 1;
                text.push(sign);
            }
            text.push_str(&self.digits(10)?);
        }
        if matches!(self.peek(), Some('j' | 'J')) {
            self.i += 1;
            self.end_of_number()?;
            return Some(Lit::Complex(0.0, text.parse().ok()?));
        }
        self.end_of_number()?;
        if is_float {
            return Some(Lit::Float(text.parse().ok()?));
        }
        // `0`, `00` are fine; `010` is a SyntaxError in Python 3.
        if whole.len() > 1 && whole.starts_with('0') && whole.chars().any(|d| d != '0') {
            return None;
        }
        int_lit(whole.parse().ok()?)
    }

    /// A number directly followed by a letter, digit or `_` is not a number (`1abc`).
    fn end_of_number(&self) -> Option<()> {
        match self.peek() {
            Some(c) if c.is_alphanumeric() || c == '_' => None,
            _ => Some(()),
        }
    }

    /// The length of a string prefix (`r`, `b`, `rb`, `f`, `u`...) directly followed by a
    /// quote at the current place.
    fn string_prefix_len(&self) -> Option<usize> {
        for len in [1, 2] {
            let prefix: String = (0..len)
                .filter_map(|k| self.peek_at(k))
                .collect::<String>()
                .to_ascii_lowercase();
            if prefix.chars().count() == len
                && matches!(self.peek_at(len), Some('\'' | '"'))
                && matches!(
                    prefix.as_str(),
                    "r" | "u" | "b" | "f" | "br" | "rb" | "fr" | "rf"
                )
            {
                return Some(len);
            }
        }
        None
    }

    /// One or more adjacent string literals (`'a' "b"` is `'ab'`), all text or all bytes.
    fn strings(&mut self) -> Option<Lit> {
        let mut text = String::new();
        let mut bytes: Vec<u8> = Vec::new();
        let mut kind: Option<bool> = None; // Some(true): bytes
        loop {
            self.skip_space();
            let prefix_len = match self.peek() {
                Some('\'' | '"') => 0,
                _ => match self.string_prefix_len() {
                    Some(n) => n,
                    None => break,
                },
            };
            let prefix: String = self.s[self.i..self.i + prefix_len]
                .iter()
                .collect::<String>()
                .to_ascii_lowercase();
            self.i += prefix_len;
            let (raw, is_bytes) = (prefix.contains('r'), prefix.contains('b'));
            if prefix.contains('f') {
                // An f-string is no literal.
                return None;
            }
            if kind.is_some_and(|k| k != is_bytes) {
                return None;
            }
            kind = Some(is_bytes);
            let body = self.quoted_body()?;
            if is_bytes {
                bytes.extend(bytes_value(&body, raw)?);
            } else {
                text.push_str(&str_value(&body, raw)?);
            }
        }
        match kind? {
            true => Some(Lit::Bytes(bytes)),
            false => Some(Lit::Str(text)),
        }
    }

    /// The characters between the quotes (escapes not yet applied), the place moved past
    /// the closing quote.
    fn quoted_body(&mut self) -> Option<Vec<char>> {
        let q = self.peek()?;
        let triple = self.peek_at(1) == Some(q) && self.peek_at(2) == Some(q);
        self.i += if triple { 3 } else { 1 };
        let mut body = Vec::new();
        loop {
            let c = self.peek()?;
            if c == '\\' {
                body.push(c);
                body.push(self.peek_at(1)?);
                self.i += 2;
                continue;
            }
            if c == q {
                if !triple {
                    self.i += 1;
                    return Some(body);
                }
                if self.peek_at(1) == Some(q) && self.peek_at(2) == Some(q) {
                    self.i += 3;
                    return Some(body);
                }
            } else if !triple && c == '\n' {
                return None;
            }
            body.push(c);
            self.i += 1;
        }
    }
}

fn int_lit(n: u128) -> Option<Lit> {
    Some(Lit::Int(match u64::try_from(n) {
        Ok(n) => Json::from(n),
        // Beyond 64 bits: as JSON readers read Python's big integers.
        Err(_) => Json::Number(Number::from_f64(n as f64)?),
    }))
}

fn negate(n: &Json) -> Option<Json> {
    if let Some(u) = n.as_u64() {
        if let Ok(i) = i64::try_from(u) {
            return Some(Json::from(-i));
        }
        if u == 1 << 63 {
            return Some(Json::from(i64::MIN));
        }
    }
    Some(Json::Number(Number::from_f64(-n.as_f64()?)?))
}

/// A JSON value back as a literal (for set members already converted).
fn json_lit(j: Json) -> Lit {
    match j {
        Json::String(s) => Lit::Str(s),
        Json::Bool(b) => Lit::Bool(b),
        Json::Null => Lit::None,
        Json::Number(n) => match n.as_f64() {
            Some(f) if !n.is_i64() && !n.is_u64() => Lit::Float(f),
            _ => Lit::Int(Json::Number(n)),
        },
        // Sets hold no lists or dicts (refused above).
        other => Lit::Str(other.to_string()),
    }
}

/// A text literal's value: Python's escapes unless raw.
fn str_value(body: &[char], raw: bool) -> Option<String> {
    unescape(body, raw, false)?
        .into_iter()
        .map(char::from_u32)
        .collect()
}

/// A bytes literal's value: ASCII only, Python's byte escapes unless raw.
fn bytes_value(body: &[char], raw: bool) -> Option<Vec<u8>> {
    if body.iter().any(|c| !c.is_ascii()) {
        return None;
    }
    unescape(body, raw, true)?
        .into_iter()
        .map(|v| u8::try_from(v).ok())
        .collect()
}

/// The code points (or byte values) of a literal's body after Python's escapes; bytes
/// know no `\N`, `\u` or `\U` (kept as written). `None` for an escape Python refuses.
fn unescape(body: &[char], raw: bool, bytes: bool) -> Option<Vec<u32>> {
    if raw {
        return Some(body.iter().map(|&c| c as u32).collect());
    }
    let mut out = Vec::new();
    let mut i = 0;
    while i < body.len() {
        let c = body[i];
        i += 1;
        if c != '\\' {
            out.push(c as u32);
            continue;
        }
        let e = *body.get(i)?;
        i += 1;
        let fixed = |n: usize, i: &mut usize| {
            let v = hex(body, *i, n);
            *i += n;
            v
        };
        match e {
            '\n' => {}
            '\\' | '\'' | '"' => out.push(e as u32),
            'a' => out.push(7),
            'b' => out.push(8),
            'f' => out.push(12),
            'n' => out.push(10),
            'r' => out.push(13),
            't' => out.push(9),
            'v' => out.push(11),
            '0'..='7' => {
                let (v, used) = octal(&body[i - 1..]);
                i += used - 1;
                out.push(v);
            }
            'x' => out.push(fixed(2, &mut i)?),
            'u' if !bytes => out.push(fixed(4, &mut i)?),
            'U' if !bytes => out.push(fixed(8, &mut i)?),
            // `\N{NAME}` needs Unicode's name table: left as text (see the module docs).
            'N' if !bytes => return None,
            other => {
                out.push('\\' as u32);
                out.push(other as u32);
            }
        }
    }
    Some(out)
}

/// Up to three octal digits at the start of `s`: (value, digits used).
fn octal(s: &[char]) -> (u32, usize) {
    let mut v = 0;
    let mut used = 0;
    for c in s.iter().take(3) {
        match c.to_digit(8) {
            Some(d) => {
                v = v * 8 + d;
                used += 1;
            }
            None => break,
        }
    }
    (v, used)
}

/// Exactly `n` hex digits at `body[at..]`.
fn hex(body: &[char], at: usize, n: usize) -> Option<u32> {
    let digits: String = body.get(at..at + n)?.iter().collect();
    if !digits.chars().all(|c| c.is_ascii_hexdigit()) {
        return None;
    }
    u32::from_str_radix(&digits, 16).ok()
}

#[cfg(test)]
mod tests {
    use super::eval;
    use serde_json::json;

    #[test]
    fn reads_what_literal_eval_reads() {
        let cases = [
            ("22", json!(22)),
            ("-1", json!(-1)),
            ("+1", json!(1)),
            ("- 1", json!(-1)),
            ("0x10", json!(16)),
            ("0o17", json!(15)),
            ("0b11", json!(3)),
            ("0x_ff", json!(255)),
            ("1_000", json!(1000)),
            ("00", json!(0)),
            ("1.5", json!(1.5)),
            ("1e3", json!(1000.0)),
            (".5", json!(0.5)),
            ("1.", json!(1.0)),
            ("1j", json!("1j")),
            ("1+2j", json!("(1+2j)")),
            ("True", json!(true)),
            ("None", json!(null)),
            ("'a'", json!("a")),
            ("\"a\"", json!("a")),
            ("'a' 'b'", json!("ab")),
            ("r'a\\n'", json!("a\\n")),
            ("'a\\n'", json!("a\n")),
            ("'\\x41\\101\\u00e9'", json!("AAé")),
            ("'\\d'", json!("\\d")),
            ("b'x'", json!("x")),
            ("u'x'", json!("x")),
            ("'''a'b'''", json!("a'b")),
            ("['/dev/sda']", json!(["/dev/sda"])),
            ("{ 'root': 'HDD' }", json!({"root": "HDD"})),
            ("(1,2)", json!([1, 2])),
            ("(1,)", json!([1])),
            ("(1)", json!(1)),
            ("()", json!([])),
            ("{1,2,1}", json!([1, 2])),
            ("set()", json!([])),
            ("[1, 2,]", json!([1, 2])),
            ("1, 2", json!([1, 2])),
            ("1 # comment", json!(1)),
            ("...", json!("...")),
            (" 1", json!(1)),
            (
                "{1: 'a', True: 'b', None: 'c'}",
                json!({"1": "a", "true": "b", "null": "c"}),
            ),
            ("{'a': 1, 'a': 2}", json!({"a": 2})),
            (
                "[True, None, 'x', {'a': [1]}]",
                json!([true, null, "x", {"a": [1]}]),
            ),
        ];
        for (text, want) in cases {
            assert_eq!(eval(text), Some(want), "{text}");
        }
    }

    #[test]
    fn refuses_what_literal_eval_refuses() {
        for text in [
            "010",
            "1+2",
            "2024-01-01",
            "true",
            "foo",
            "f'x'",
            "'a' b'b'",
            "1abc",
            "1_",
            "0x",
            "1e",
            "--1",
            "-True",
            "[1 2]",
            "{[1]: 2}",
            "{[1], 2}",
            "'unclosed",
            "1j+2j",
            "a=b",
            "",
            "'\\N{BULLET}'",
            "'x'.upper()",
            "foo # bar",
        ] {
            assert_eq!(eval(text), None, "{text}");
        }
    }

    #[test]
    fn deep_nesting_is_refused_not_a_crash() {
        let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
        assert_eq!(eval(&deep), None);
    }
}
