//! The INI inventory reader, as Ansible's `ini` plugin reads it.
//!
//! - `[group]` sections list hosts, one a line: `name key=value key="quoted value"`
//!   (split like a POSIX shell: quotes group words, `#` outside quotes starts a
//!   comment). Names may hold ranges (`node[01:03]`, `node[a:c]`) and a port
//!   (`web1:2222` sets `ansible_port`).
//! - `[group:children]` lists child groups; a child that no section of the file (or
//!   of a file read before it) defines is an error, as in Ansible.
//! - `[group:vars]` sets `key=value` group variables; `[x:vars]` for a group defined
//!   nowhere is an error, as in Ansible.
//! - Lines starting with `#` or `;` are comments; hosts before any section go to
//!   `ungrouped`.
//!
//! Values, host lines and `[group:vars]` alike, are read as Python literals
//! ([`python_literal`], ansible-core 2.19's rule): `port=22` is the number 22,
//! `flag=False` false, `devices="['/dev/sda']"` a list (a host line is first split like
//! a shell would, quotes removed), `"{ 'root': 'HDD' }"` a mapping, `name='web'` the
//! string `web`; what is no Python literal stays text as written (`true`, `yes`,
//! `2024-01-01`, `/dev/sda`). `key=` is the empty string.
//!
//! Order, as Ansible's: a child named in `[g:children]` before its own section joins
//! `g` when that section comes (so `g`'s children, and so its hosts, are in that order).

use serde_json::Value as Json;

use super::{Inventory, python_literal, ranges};
use crate::error::{InputErrors, Location, SourceError, SourceFile};

#[derive(Clone, Copy, PartialEq)]
enum State {
    Hosts,
    Children,
    Vars,
}

/// A word of a host line, with its 0-based character column.
struct Token {
    text: String,
    column: usize,
    /// Length in characters as written.
    len: usize,
}

/// Reads the INI inventory `file` into `inv`, adding located errors to `errors`.
pub fn parse(file: &SourceFile, inv: &mut Inventory, errors: &mut InputErrors) {
    let mut group = "ungrouped".to_string();
    let mut state = State::Hosts;
    // `[x:vars]` headers for groups not (yet) defined: name -> location.
    let mut pending: Vec<(String, Location)> = Vec::new();
    let mut defined: Vec<String> = vec!["all".into(), "ungrouped".into()];
    // Children named before any section of theirs: (child, parent, where named).
    let mut waiting: Vec<(String, String, Location)> = Vec::new();
    let mark_defined =
        |name: &str, defined: &mut Vec<String>, pending: &mut Vec<(String, Location)>| {
            if !defined.iter().any(|d| d == name) {
                defined.push(name.to_string());
            }
            pending.retain(|(n, _)| n != name);
        };

    for (idx, raw) in file.text.lines().enumerate() {
        let lineno = idx + 1;
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        let indent = raw.chars().take_while(|c| c.is_whitespace()).count();
        let loc = |col: usize, len: usize| Location::new(file, lineno, indent + col + 1, len);

        if line.starts_with('[') {
            match parse_header(line) {
                Header::Section(name, kind) => {
                    state = match kind.as_deref() {
                        None | Some("hosts") => State::Hosts,
                        Some("children") => State::Children,
                        Some("vars") => State::Vars,
                        Some(other) => {
                            let col = line.find(':').unwrap_or(0) + 1;
                            errors.push(
                                SourceError::at(
                                    loc(col, other.len()),
                                    format!("unknown section type `:{other}` in `{line}`"),
                                )
                                .with_help(format!(
                                    "use [{name}], [{name}:children] or [{name}:vars]"
                                )),
                            );
                            // Skip this section's lines rather than misreading them.
                            group = String::new();
                            continue;
                        }
                    };
                    if state == State::Vars {
                        if !defined.contains(&name) {
                            pending.push((name.clone(), loc(1, name.chars().count())));
                        }
                    } else {
                        mark_defined(&name, &mut defined, &mut pending);
                    }
                    inv.add_group(&name);
                    if state != State::Vars {
                        join_parents(&name, &mut waiting, inv);
                    }
                    group = name;
                    continue;
                }
                Header::Unclosed => {
                    errors.push(
                        SourceError::at(
                            loc(0, line.chars().count()),
                            format!("section header `{line}` is not closed"),
                        )
                        .with_help("end the section header with `]`, as in `[group]`"),
                    );
                    group = String::new();
                    continue;
                }
                Header::Invalid => {
                    errors.push(
                        SourceError::at(
                            loc(0, line.chars().count()),
                            format!("invalid section header `{line}`"),
                        )
                        .with_help(
                            "a section is `[group]`, `[group:children]` or `[group:vars]`; group names have no spaces",
                        ),
                    );
                    group = String::new();
                    continue;
                }
                Header::HostLine => {}
            }
        }
        if group.is_empty() {
            // Inside a section whose header was wrong: already reported.
            continue;
        }
        match state {
            State::Hosts => host_line(file, lineno, raw, &group, inv, errors),
            State::Children => {
                let tokens = match tokenize(raw) {
                    Ok(t) => t,
                    Err((col, msg)) => {
                        errors.push(SourceError::at(
                            Location::new(file, lineno, col + 1, 1),
                            msg,
                        ));
                        continue;
                    }
                };
                let Some(first) = tokens.first() else {
                    continue;
                };
                let at = Location::new(file, lineno, first.column + 1, first.len);
                if let Some(extra) = tokens.get(1) {
                    errors.push(
                        SourceError::at(
                            Location::new(file, lineno, extra.column + 1, extra.len),
                            format!(
                                "unexpected `{}` after child group `{}` in [{group}:children]",
                                extra.text, first.text
                            ),
                        )
                        .with_help("list one child group a line; hosts go in a [group] section"),
                    );
                    continue;
                }
                if first.text == group {
                    errors.push(
                        SourceError::at(at, format!("group `{group}` cannot be its own child"))
                            .with_help("remove this line"),
                    );
                    continue;
                }
                mark_defined(&first.text, &mut defined, &mut pending);
                if inv.groups.contains_key(&first.text) {
                    inv.add_child(&group, &first.text, Some(at));
                } else {
                    // Joins `group` when its own section comes, as in Ansible.
                    waiting.push((first.text.clone(), group.clone(), at));
                }
            }
            State::Vars => {
                let Some((k, v)) = line.split_once('=') else {
                    errors.push(
                        SourceError::at(
                            loc(0, line.chars().count()),
                            format!("expected `key=value` in [{group}:vars], found `{line}`"),
                        )
                        .with_help("write one variable a line, as `name=value`"),
                    );
                    continue;
                };
                let key = k.trim();
                if !valid_var_name(key) {
                    errors.push(
                        SourceError::at(
                            loc(0, k.chars().count().max(1)),
                            format!("`{key}` is not a valid variable name in [{group}:vars]"),
                        )
                        .with_help(
                            "variable names are letters, digits and `_`, not starting with a digit",
                        ),
                    );
                    continue;
                }
                inv.set_group_var(&group, key, value(v.trim()));
            }
        }
    }
    // Children that never got a section of their own: Ansible refuses the file.
    for (child, parent, at) in waiting {
        errors.push(
            SourceError::at(
                at,
                format!("[{parent}:children] names group `{child}`, which no section defines"),
            )
            .with_help(format!(
                "add a [{child}] section (it may be empty), or remove this line"
            )),
        );
    }
    for (name, at) in pending {
        errors.push(
            SourceError::at(
                at,
                format!("[{name}:vars] is for a group `{name}` that is defined nowhere"),
            )
            .with_help(format!(
                "add a [{name}] or [{name}:children] section, or fix the group name"
            )),
        );
    }
}

/// Links `name` under every parent that named it before its section (Ansible's
/// `_add_pending_children`), and the parents still waiting themselves.
fn join_parents(name: &str, waiting: &mut Vec<(String, String, Location)>, inv: &mut Inventory) {
    let (now, later): (Vec<_>, Vec<_>) = std::mem::take(waiting)
        .into_iter()
        .partition(|(child, _, _)| child == name);
    *waiting = later;
    for (_, parent, at) in now {
        inv.add_child(&parent, name, Some(at));
        if waiting.iter().any(|(c, _, _)| *c == parent) {
            join_parents(&parent, waiting, inv);
        }
    }
}

enum Header {
    Section(String, Option<String>),
    Unclosed,
    Invalid,
    HostLine,
}

/// Ansible's `^\[([^:\]\s]+)(?::(\w+))?\]\s*(?:\#.*)?$`, with an IPv6 host line
/// (`[fe80::1]:22 ...`) left alone.
fn parse_header(line: &str) -> Header {
    let Some(inner_end) = line.find(']') else {
        return Header::Unclosed;
    };
    let inner = &line[1..inner_end];
    let rest = line[inner_end + 1..].trim();
    if inner.matches(':').count() >= 2 {
        return Header::HostLine; // an IPv6 address
    }
    if !(rest.is_empty() || rest.starts_with('#') || rest.starts_with(';')) {
        return Header::Invalid;
    }
    let (name, kind) = match inner.split_once(':') {
        Some((n, k)) => (n, Some(k)),
        None => (inner, None),
    };
    if name.is_empty() || name.chars().any(|c| c.is_whitespace() || c == '[') {
        return Header::Invalid;
    }
    if let Some(k) = kind
        && (k.is_empty() || !k.chars().all(|c| c.is_alphanumeric() || c == '_'))
    {
        return Header::Invalid;
    }
    Header::Section(name.to_string(), kind.map(str::to_string))
}

/// A host line: a name (maybe a range, maybe with a port) and `key=value` variables.
fn host_line(
    file: &SourceFile,
    lineno: usize,
    raw: &str,
    group: &str,
    inv: &mut Inventory,
    errors: &mut InputErrors,
) {
    let tokens = match tokenize(raw) {
        Ok(t) => t,
        Err((col, msg)) => {
            errors.push(
                SourceError::at(Location::new(file, lineno, col + 1, 1), msg)
                    .with_help("close the quote"),
            );
            return;
        }
    };
    let Some(first) = tokens.first() else { return };
    let at = |t: &Token| Location::new(file, lineno, t.column + 1, t.len);
    if first.text.contains('=') {
        errors.push(
            SourceError::at(at(first), format!("expected a host name, found `{}`", first.text))
                .with_help(format!(
                    "a host line is `name key=value ...`; variables for the whole group go in [{group}:vars]"
                )),
        );
        return;
    }
    let (name, port) = match ranges::split_port(&first.text) {
        Ok(x) => x,
        Err(msg) => {
            errors.push(SourceError::at(at(first), msg).with_help("write `name` or `name:port`"));
            return;
        }
    };
    let names = match ranges::expand(name) {
        Ok(n) => n,
        Err(msg) => {
            errors.push(
                SourceError::at(at(first), msg)
                    .with_help("a range is `[01:10]`, `[a:f]` or `[1:10:2]`"),
            );
            return;
        }
    };
    let mut vars: Vec<(String, Json)> = Vec::new();
    if let Some(p) = port {
        vars.push(("ansible_port".into(), Json::from(p)));
    }
    let mut ok = true;
    for t in &tokens[1..] {
        let Some((k, v)) = t.text.split_once('=') else {
            errors.push(
                SourceError::at(
                    at(t),
                    format!(
                        "expected `key=value` after host `{name}`, found `{}`",
                        t.text
                    ),
                )
                .with_help("host variables are written `key=value`; quote values with spaces"),
            );
            ok = false;
            continue;
        };
        if !valid_var_name(k) {
            errors.push(
                SourceError::at(
                    at(t),
                    format!("`{k}` is not a valid variable name (in `{}`)", t.text),
                )
                .with_help("variable names are letters, digits and `_`, not starting with a digit"),
            );
            ok = false;
            continue;
        }
        let value = value(v);
        vars.push((k.to_string(), value));
    }
    if !ok {
        return;
    }
    for host in names {
        inv.add_host(&host, group);
        for (k, v) in &vars {
            inv.set_host_var(&host, k, v.clone());
        }
    }
}

/// True for a name Ansible accepts as a variable.
pub(crate) fn valid_var_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// A value as Ansible's INI plugin reads it: a Python literal, or else the text as is.
pub(crate) fn value(v: &str) -> Json {
    python_literal::eval(v).unwrap_or_else(|| Json::String(v.to_string()))
}

/// Splits a line like a POSIX shell with comments (Python's `shlex.split(line,
/// comments=True)`, as Ansible does), keeping each word's column.
/// `Err((column, message))` for an unclosed quote.
fn tokenize(line: &str) -> Result<Vec<Token>, (usize, String)> {
    let chars: Vec<char> = line.chars().collect();
    let mut tokens = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c.is_whitespace() {
            i += 1;
            continue;
        }
        if c == '#' {
            break;
        }
        let start = i;
        let mut text = String::new();
        let mut comment = false;
        while i < chars.len() {
            let c = chars[i];
            match c {
                c if c.is_whitespace() => break,
                '#' => {
                    comment = true;
                    break;
                }
                '\'' | '"' => {
                    let quote = c;
                    let open = i;
                    i += 1;
                    loop {
                        let Some(&d) = chars.get(i) else {
                            return Err((open, format!("unclosed quote {quote} in this line")));
                        };
                        i += 1;
                        if d == quote {
                            break;
                        }
                        // Python's shlex: in double quotes, `\` escapes only `"` and `\`.
                        if quote == '"'
                            && d == '\\'
                            && let Some(&e) = chars.get(i)
                            && matches!(e, '"' | '\\')
                        {
                            text.push(e);
                            i += 1;
                            continue;
                        }
                        text.push(d);
                    }
                    continue;
                }
                '\\' => {
                    if let Some(&e) = chars.get(i + 1) {
                        text.push(e);
                        i += 2;
                    } else {
                        i += 1;
                    }
                    continue;
                }
                _ => text.push(c),
            }
            i += 1;
        }
        tokens.push(Token {
            text,
            column: start,
            len: (i - start).max(1),
        });
        if comment {
            break;
        }
    }
    Ok(tokens)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inventory::Inventory;

    fn inv(text: &str) -> Result<Inventory, InputErrors> {
        Inventory::from_ini(&SourceFile::new("hosts.ini", text))
    }

    #[test]
    fn tokenizer_handles_quotes_and_comments() {
        let t = tokenize(r#"  web1 a=1 b="x y" c='q' d=\"e # comment"#).unwrap_or_default();
        let words: Vec<&str> = t.iter().map(|t| t.text.as_str()).collect();
        assert_eq!(words, vec!["web1", "a=1", "b=x y", "c=q", "d=\"e"]);
        assert_eq!(t[0].column, 2);
        assert!(tokenize("a b=\"open").is_err());
    }

    #[test]
    fn values_are_python_literals_in_host_lines_and_group_vars() {
        let i = inv("web1 port=22 on=true off=False f=1.5 mode=0644 s=\"22\" q2=\"'22'\" l='[1]' n=None x=abc e= d=\"{ 'root': 'HDD' }\"\n[ungrouped:vars]\ngn=2\ngf=False\ngq=\"a b\"\ngs='x' # kept\ngw=root # a comment\n")
            .unwrap_or_default();
        let v = i.host_vars("web1");
        assert_eq!(v["port"], Json::from(22));
        assert_eq!(v["on"], Json::from("true"));
        assert_eq!(v["off"], Json::Bool(false));
        assert_eq!(v["f"], Json::from(1.5));
        assert_eq!(v["mode"], Json::from("0644"));
        assert_eq!(v["s"], Json::from(22));
        assert_eq!(v["q2"], Json::from("22"));
        assert_eq!(v["l"], serde_json::json!([1]));
        assert_eq!(v["d"], serde_json::json!({"root": "HDD"}));
        assert_eq!(v["n"], Json::Null);
        assert_eq!(v["x"], Json::from("abc"));
        assert_eq!(v["e"], Json::from(""));
        assert_eq!(v["gn"], Json::from(2));
        assert_eq!(v["gf"], Json::Bool(false));
        assert_eq!(v["gq"], Json::from("a b"));
        assert_eq!(v["gs"], Json::from("x"));
        assert_eq!(v["gw"], Json::from("root # a comment"));
    }

    #[test]
    fn a_child_named_before_its_section_joins_when_the_section_comes() {
        let i = inv("[p:children]\nlate\nearly\n[early]\ne1\n[late]\nl1\n").unwrap_or_default();
        assert_eq!(i.groups["p"].children, vec!["early", "late"]);
        assert_eq!(i.select("p"), Ok(vec!["e1".into(), "l1".into()]));
    }

    #[test]
    fn ports_ranges_and_sections() {
        let i =
            inv("[web]\nweb[01:02]:2222 ansible_user=root\n[db]\ndb1\n[app:children]\nweb\ndb\n")
                .unwrap_or_default();
        assert_eq!(i.hosts(), vec!["web01", "web02", "db1"]);
        assert_eq!(
            i.select("app"),
            Ok(vec!["web01".into(), "web02".into(), "db1".into()])
        );
        assert_eq!(i.connection("web02").port, Some(2222));
        assert_eq!(i.connection("web02").user.as_deref(), Some("root"));
    }

    fn first_error(text: &str) -> String {
        match inv(text) {
            Ok(_) => panic!("expected an error for {text:?}"),
            Err(e) => e.0.first().map(|e| e.to_string()).unwrap_or_default(),
        }
    }

    #[test]
    fn errors_are_located() {
        let e = first_error("[web]\nweb1\n[db\ndb1\n");
        assert!(e.contains("section header `[db` is not closed"), "{e}");
        assert!(e.contains("hosts.ini:3:1"), "{e}");
        let e = first_error("[web]\nweb1 ansible-user=x\n");
        assert!(
            e.contains("`ansible-user` is not a valid variable name"),
            "{e}"
        );
        assert!(e.contains("hosts.ini:2:6"), "{e}");
        let e = first_error("[web]\nweb1 novalue\n");
        assert!(
            e.contains("expected `key=value` after host `web1`, found `novalue`"),
            "{e}"
        );
        let e = first_error("[ghost:vars]\na=1\n");
        assert!(
            e.contains("[ghost:vars] is for a group `ghost` that is defined nowhere"),
            "{e}"
        );
        assert!(e.contains("hosts.ini:1:2"), "{e}");
        let e = first_error("[web:kids]\nx\n");
        assert!(e.contains("unknown section type `:kids`"), "{e}");
        let e = first_error("[web]\nn[3:1]\n");
        assert!(e.contains("must have begin <= end"), "{e}");
        let e = first_error("[web]\nw1\n[web:children]\nall\n");
        assert!(
            e.contains("group `all` cannot be a child of group `web`"),
            "{e}"
        );
        assert!(e.contains("hosts.ini:4:1"), "{e}");
        let e = first_error("[a:children]\nb\n[b:children]\na\n");
        assert!(e.contains("is its own ancestor"), "{e}");
        assert!(e.contains("hosts.ini:"), "{e}");
    }

    #[test]
    fn vars_before_definition_are_accepted_undefined_children_are_not() {
        let i = inv("[web:vars]\nx=1\n[web]\nw1\n").unwrap_or_default();
        assert_eq!(i.host_vars("w1")["x"], Json::from(1));
        let e = first_error("[web]\nw1\n[app:children]\nweb\nnever\n");
        assert!(
            e.contains("[app:children] names group `never`, which no section defines"),
            "{e}"
        );
        assert!(e.contains("hosts.ini:5:1"), "{e}");
        assert!(e.contains("add a [never] section (it may be empty)"), "{e}");
    }

    #[test]
    fn malformed_lines_do_not_panic() {
        for text in [
            "[",
            "]",
            "[]",
            "[:]",
            "[a:]",
            "=",
            "==",
            "a =",
            "[a]\n=b",
            "\"",
            "a 'b",
            "[a:vars]\n=",
            "[a:vars]\nnoeq",
            "[a:children]\n",
            "[a:children]\n\"",
            "é[1:2]",
            "x[ä:ö]",
            "\\",
            "[::1]",
            "[::1]:22 a=1",
            "h:99999",
            "[a b]",
            "[a]junk",
            "a[1:2:3:4:5]",
        ] {
            let _ = inv(text);
        }
    }
}
