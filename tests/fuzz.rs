//! Fuzzing with proptest, bounded so the whole file runs in seconds: arbitrary text and
//! structure-aware documents go through the YAML reader, the playbook loader (and the
//! graph builder), the INI and YAML inventory loaders (and host patterns), and the
//! template layer (arbitrary expressions over arbitrary values). Nothing may panic, an
//! error about a file must say where (file:line:column inside that file), and values
//! rendered for a shell must come out as exactly one word each.
//!
//! Cases per property are set below; `PROPTEST_CASES` overrides them for a longer run.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};

use lifeboat::error::{InputErrors, SourceError, SourceFile};
use lifeboat::graph::{Graph, Selection};
use lifeboat::inventory::Inventory;
use lifeboat::playbook::Playbook;
use lifeboat::template::Templates;
use proptest::prelude::*;
use proptest::test_runner::{Config, FileFailurePersistence};
use serde_json::{Value, json};

fn config(cases: u32) -> Config {
    Config {
        cases: std::env::var("PROPTEST_CASES")
            .ok()
            .and_then(|c| c.parse().ok())
            .unwrap_or(cases),
        max_shrink_iters: 2000,
        failure_persistence: Some(Box::new(FileFailurePersistence::Off)),
        ..Config::default()
    }
}

// ------------------------------------------------------------------ generators

/// Pieces of YAML, INI and template syntax, to build hostile text from.
const TOKENS: &[&str] = &[
    ":",
    ": ",
    "- ",
    "{",
    "}",
    "[",
    "]",
    "{{",
    "}}",
    "{%",
    "%}",
    "\n",
    "\n  ",
    "\n    ",
    "  ",
    "\t",
    "'",
    "\"",
    "&a ",
    "*a",
    "<<: ",
    "!!str ",
    "!!binary ",
    "!custom ",
    "~",
    "|",
    "|-",
    ">",
    "#",
    "?",
    ",",
    "---\n",
    "...\n",
    "%YAML 1.2\n",
    "\\",
    "\u{feff}",
    "\u{0}",
    "\r",
    "\u{fffd}",
    "é",
    "😀",
    "0x1F",
    "0o17",
    "1e999",
    "-.inf",
    ".nan",
    "0755",
    "yes",
    "null",
    "true",
    "99999999999999999999999",
    "-9223372036854775808",
    "steps",
    "id",
    "needs",
    "hosts",
    "shell",
    "command",
    "vars",
    "loop",
    "when",
    "register",
    "rollback",
    "import",
    "secrets",
    "defaults",
    "phases",
    "timeout",
    "retries",
    "item",
    "all",
    "[web]",
    "[web:vars]",
    "[web:children]",
    "web[01:03]",
    "h[a:c]",
    "x[1:99999999]",
    "ansible_host=",
    "ansible_port=",
    "=",
    "a=b",
    "host",
    ";",
    "range(",
    ")",
    "(",
    "|quote",
    "|int",
    "not ",
    " and ",
    " in ",
    ".",
    "[0]",
    "['x']",
];

fn token_text() -> impl Strategy<Value = String> {
    prop::collection::vec(
        prop_oneof![
            4 => prop::sample::select(TOKENS).prop_map(str::to_string),
            1 => "[a-z0-9_]{1,8}",
            1 => any::<char>().prop_map(|c| c.to_string()),
        ],
        0..80,
    )
    .prop_map(|t| t.concat())
}

fn arbitrary_text() -> impl Strategy<Value = String> {
    prop_oneof![token_text(), "\\PC{0,200}", any::<String>()]
}

/// A scalar, with template syntax now and then.
fn scalar() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(|f| json!(f)),
        "[a-z_]{1,10}".prop_map(Value::from),
        token_text().prop_map(Value::from),
        prop::sample::select(
            &[
                "{{ x }}",
                "{{ missing }}",
                "{{ item }}",
                "{{ x | quote }}",
                "{{ 1/0 }}",
                "{{ x[99] }}",
                "{% if %}",
                "{{ }}",
                "{{ x.y.z }}",
                "{{ range(3) | list }}",
                "a",
                "all",
                "localhost",
                "web",
                "30s",
                "-1s",
                "99999999999h",
                "0",
                "auto",
                "none",
            ][..]
        )
        .prop_map(Value::from),
    ]
}

/// Any JSON-like value, a few levels deep.
fn tree() -> impl Strategy<Value = Value> {
    scalar().prop_recursive(3, 24, 5, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
            prop::collection::vec(("[a-z_]{1,8}", inner), 0..5)
                .prop_map(|kv| Value::Object(kv.into_iter().collect())),
        ]
    })
}

/// A step's keys (the loader's own table), every module's key, `import`, and one the
/// loader must refuse.
fn step_keys() -> Vec<&'static str> {
    let mut keys = lifeboat::keys::names(lifeboat::keys::Place::Step);
    keys.extend(lifeboat::modules::registry().keys().copied());
    keys.extend(["import", "bogus"]);
    keys
}

/// A playbook's keys (the loader's own table) and one it must refuse.
fn playbook_keys() -> Vec<&'static str> {
    let mut keys = lifeboat::keys::names(lifeboat::keys::Place::Playbook);
    keys.push("bogus");
    keys
}

/// A step: known keys with values of any shape.
fn step() -> impl Strategy<Value = Value> {
    prop::collection::vec((prop::sample::select(step_keys()), tree()), 0..6)
        .prop_map(|kv| Value::Object(kv.into_iter().map(|(k, v)| (k.to_string(), v)).collect()))
}

/// A playbook: known top-level keys, steps that are mostly step-like.
fn playbook() -> impl Strategy<Value = Value> {
    (
        prop::collection::vec((prop::sample::select(playbook_keys()), tree()), 0..4),
        prop::collection::vec(prop_oneof![4 => step(), 1 => tree()], 0..6),
        any::<bool>(),
    )
        .prop_map(|(top, steps, with_steps)| {
            let mut m: serde_json::Map<String, Value> =
                top.into_iter().map(|(k, v)| (k.to_string(), v)).collect();
            if with_steps {
                m.insert("steps".into(), Value::Array(steps));
            }
            Value::Object(m)
        })
}

/// A YAML inventory: groups with hosts, children and vars.
fn yaml_inventory() -> impl Strategy<Value = Value> {
    let group = (
        prop::collection::vec(
            (
                prop_oneof![
                    "[a-z]{1,5}",
                    "[a-z]{1,3}\\[[0-9]{1,2}:[0-9]{1,2}\\]",
                    token_text()
                ],
                tree(),
            ),
            0..4,
        ),
        prop::collection::vec(("[a-z]{1,5}", tree()), 0..3),
        tree(),
    )
        .prop_map(|(hosts, children, vars)| {
            json!({
                "hosts": Value::Object(hosts.into_iter().collect()),
                "children": Value::Object(children.into_iter().collect()),
                "vars": vars,
            })
        });
    prop::collection::vec(
        (
            prop_oneof![Just("all".to_string()), "[a-z]{1,5}"],
            prop_oneof![group, tree()],
        ),
        0..4,
    )
    .prop_map(|g| Value::Object(g.into_iter().collect()))
}

/// An INI inventory: sections and host lines, some broken.
fn ini_inventory() -> impl Strategy<Value = String> {
    let line = prop_oneof![
        "\\[[a-z]{1,5}\\]".prop_map(|s| s),
        "\\[[a-z]{1,5}:(vars|children|bogus)\\]",
        "[a-z]{1,5}( [a-z_]{1,12}=[a-z0-9'\" ]{0,8}){0,3}",
        "[a-z]{1,3}\\[[0-9a-z]{0,3}:[0-9a-z]{0,3}(:[0-9]{0,2})?\\][a-z.]{0,4}( ansible_port=[0-9]{1,6})?",
        "[a-z]{1,5}:[0-9]{0,6}",
        "[a-z_]{1,8}=[^\n]{0,12}",
        "[#;][^\n]{0,10}",
        token_text().prop_map(|t| t.replace('\n', " ")),
    ];
    prop::collection::vec(line, 0..12).prop_map(|l| l.join("\n"))
}

/// Block YAML for a value; scalars as JSON strings or literals (valid YAML).
fn to_yaml(v: &Value, indent: usize, out: &mut String) {
    let pad = " ".repeat(indent);
    match v {
        Value::Object(m) if !m.is_empty() => {
            for (k, val) in m {
                out.push_str(&format!("{pad}{}:", json!(k)));
                block_child(val, indent, out);
            }
        }
        Value::Array(a) if !a.is_empty() => {
            for val in a {
                out.push_str(&format!("{pad}-"));
                block_child(val, indent, out);
            }
        }
        other => out.push_str(&format!("{pad}{other}\n")),
    }
}

fn block_child(v: &Value, indent: usize, out: &mut String) {
    match v {
        Value::Object(m) if !m.is_empty() => {
            out.push('\n');
            to_yaml(v, indent + 2, out);
        }
        Value::Array(a) if !a.is_empty() => {
            out.push('\n');
            to_yaml(v, indent + 2, out);
        }
        other => out.push_str(&format!(" {other}\n")),
    }
}

fn yaml_text(v: &Value) -> String {
    let mut s = String::new();
    to_yaml(v, 0, &mut s);
    s
}

/// Inserts a token at a few places, to break a well-formed document a little.
fn damage() -> impl Strategy<Value = Vec<(prop::sample::Index, &'static str)>> {
    prop::collection::vec(
        (any::<prop::sample::Index>(), prop::sample::select(TOKENS)),
        0..3,
    )
}

fn damaged(text: &str, damage: &[(prop::sample::Index, &'static str)]) -> String {
    let mut chars: Vec<char> = text.chars().collect();
    for (at, tok) in damage {
        let i = if chars.is_empty() {
            0
        } else {
            at.index(chars.len() + 1)
        };
        chars.splice(i..i, tok.chars());
    }
    chars.into_iter().collect()
}

// ------------------------------------------------------------------ checks

/// Every error of a file input says where, inside that file (or a file it named).
fn assert_located(errors: &InputErrors, text: &str, what: &str) {
    assert!(
        !errors.0.is_empty(),
        "an error list with no error for {what}"
    );
    for e in &errors.0 {
        assert_one_located(e, text, what);
    }
}

fn assert_one_located(e: &SourceError, text: &str, what: &str) {
    assert!(
        !e.message.trim().is_empty(),
        "an empty message for {what}:\n{text}"
    );
    let Some(loc) = &e.location else {
        panic!("an error without a place for {what}: {e}\n--- input:\n{text}");
    };
    let lines = loc.file.text.lines().count().max(1);
    assert!(
        loc.line >= 1 && loc.line <= lines + 1,
        "line {} of a {lines}-line file for {what}: {e}\n--- input:\n{text}",
        loc.line
    );
    // Rendering the error (with its snippet) must not panic either.
    let shown = e.to_string();
    assert!(shown.contains(&format!("{}:{}:", loc.file.path.display(), loc.line)));
}

/// Runs `f`, turning a panic into a test failure that shows the input.
fn no_panic<T>(what: &str, input: &str, f: impl FnOnce() -> T) -> T {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(v) => v,
        Err(p) => {
            let msg = p
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            panic!("{what} panicked ({msg}) on:\n{input:?}")
        }
    }
}

fn load_playbook(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap_or_else(|e| panic!("write: {e}"));
    let inv = Inventory::implicit_localhost();
    no_panic("the playbook loader", text, || match Playbook::load(path) {
        Ok(pb) => {
            if let Err(e) = Graph::build(&pb, &inv, &Selection::default()) {
                for err in &e.0 {
                    assert!(!err.message.is_empty());
                    let _ = err.to_string();
                }
            }
        }
        Err(e) => assert_located(&e, text, "a playbook"),
    });
}

fn load_inventory(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap_or_else(|e| panic!("write: {e}"));
    no_panic("the inventory loader", text, || {
        match Inventory::load(Some(path)) {
            Ok(inv) => {
                for p in [
                    "all",
                    "web",
                    "a:b",
                    "x[0]",
                    "*",
                    "web:&all:!x",
                    "~[a-",
                    "x[-1:]",
                    "",
                ] {
                    let _ = inv.select(p);
                }
                for h in inv.hosts() {
                    let _ = inv.connection(&h);
                    let _ = inv.host_vars(&h);
                }
                let _ = inv.to_ansible_json(true);
                let _ = inv.graph_text();
            }
            Err(e) => assert_located(&e, text, "an inventory"),
        }
    });
}

struct Dir {
    _tmp: tempfile::TempDir,
    path: PathBuf,
}

fn dir() -> Dir {
    let tmp = tempfile::Builder::new()
        .prefix("lifeboat-fuzz")
        .tempdir()
        .unwrap_or_else(|e| panic!("tempdir: {e}"));
    let path = tmp.path().to_path_buf();
    Dir { _tmp: tmp, path }
}

// ------------------------------------------------------------------ properties

proptest! {
    #![proptest_config(config(256))]

    #[test]
    fn yaml_reader_never_panics_and_locates_errors(text in arbitrary_text()) {
        let file = SourceFile::new("fuzz.yml", text.as_str());
        let result = no_panic("the YAML reader", &text, || lifeboat::yaml::parse(&file));
        if let Err(e) = result {
            assert_one_located(&e, &text, "YAML");
        }
    }

    #[test]
    fn arbitrary_playbook_text(text in arbitrary_text()) {
        let d = dir();
        load_playbook(&d.path.join("p.yml"), &text);
    }

    #[test]
    fn structured_playbooks(pb in playbook(), dmg in damage()) {
        let d = dir();
        let text = damaged(&yaml_text(&pb), &dmg);
        load_playbook(&d.path.join("p.yml"), &text);
    }

    #[test]
    fn arbitrary_inventory_text(text in arbitrary_text(), ini in any::<bool>()) {
        let d = dir();
        let name = if ini { "inv.ini" } else { "inv.yml" };
        load_inventory(&d.path.join(name), &text);
    }

    #[test]
    fn structured_ini_inventories(text in ini_inventory(), dmg in damage()) {
        let d = dir();
        load_inventory(&d.path.join("inv.ini"), &damaged(&text, &dmg));
    }

    #[test]
    fn structured_yaml_inventories(inv in yaml_inventory(), dmg in damage()) {
        let d = dir();
        let text = damaged(&yaml_text(&inv), &dmg);
        load_inventory(&d.path.join("inv.yml"), &text);
    }
}

/// Template expressions, built from pieces that mean something to minijinja.
fn expression() -> impl Strategy<Value = String> {
    let atom = prop_oneof![
        prop::sample::select(
            &[
                "x",
                "n",
                "items",
                "m",
                "missing",
                "item",
                "x.y",
                "m.a",
                "m['a']",
                "items[0]",
                "items[-1]",
                "items[99]",
                "none",
                "true",
                "0",
                "-1",
                "1.5",
                "'s'",
                "\"d\"",
                "[]",
                "{}",
                "range(5)",
                "range(-1)",
                "range(100001)",
                "now()",
                "x ~ n",
                "n / 0",
                "n // 0",
                "n % 0",
                "2 ** 999",
                "'a' * 3",
                "'a' * -1",
                "items * 2",
                "loop",
            ][..]
        )
        .prop_map(str::to_string),
        "[a-z]{1,4}",
    ];
    atom.prop_recursive(3, 12, 3, |inner| {
        prop_oneof![
            (
                inner.clone(),
                prop::sample::select(
                    &[
                        "quote",
                        "basename",
                        "dirname",
                        "to_json",
                        "int",
                        "float",
                        "length",
                        "list",
                        "first",
                        "last",
                        "join",
                        "lower",
                        "upper",
                        "trim",
                        "default('d')",
                        "safe",
                        "string",
                        "abs",
                        "round",
                        "sort",
                        "unique",
                        "reverse",
                        "map('upper')",
                        "select('odd')",
                        "items",
                        "tojson",
                        "bogus",
                    ][..]
                )
            )
                .prop_map(|(e, f)| format!("{e} | {f}")),
            (
                inner.clone(),
                prop::sample::select(
                    &["+", "-", "*", "/", "==", "and", "or", "in", "~", "<", "**"][..]
                ),
                inner.clone()
            )
                .prop_map(|(a, op, b)| format!("({a} {op} {b})")),
            inner.clone().prop_map(|e| format!("not {e}")),
            (inner.clone(), inner).prop_map(|(a, b)| format!("{a}[{b}]")),
        ]
    })
}

fn template_source() -> impl Strategy<Value = String> {
    prop::collection::vec(
        prop_oneof![
            3 => expression().prop_map(|e| format!("{{{{ {e} }}}}")),
            1 => expression().prop_map(|e| format!("{{% if {e} %}}a{{% else %}}b{{% endif %}}")),
            1 => expression().prop_map(|e| format!("{{% for i in {e} %}}{{{{ i }}}},{{% endfor %}}")),
            1 => token_text(),
            2 => "[^{}%]{0,10}",
        ],
        0..4,
    )
    .prop_map(|p| p.concat())
}

fn context() -> impl Strategy<Value = Value> {
    (
        tree(),
        any::<String>(),
        any::<i64>(),
        prop::collection::vec(tree(), 0..4),
        tree(),
    )
        .prop_map(|(x, s, n, items, m)| json!({"x": x, "s": s, "n": n, "items": items, "m": m}))
}

proptest! {
    #![proptest_config(config(256))]

    #[test]
    fn templates_never_panic(src in template_source(), expr in expression(), ctx in context()) {
        let t = Templates::new();
        let c = minijinja::Value::from(minijinja::value::Serde(&ctx));
        no_panic("the template layer", &src, || {
            for shell in [false, true] {
                if let Err(e) = t.render_str(&src, &c, shell) {
                    assert!(!e.message.is_empty(), "an empty template error for {src:?}");
                }
                let _ = t.render_value(&json!({"a": src, "b": [src], "c": format!("{{{{ {expr} }}}}")}), &c, shell);
            }
            let _ = t.check_syntax(&src);
            let _ = t.check_expression(&expr);
            if let Err(e) = t.eval(&expr, &c) {
                assert!(!e.message.is_empty(), "an empty expression error for {expr:?}");
            }
            let _ = t.eval_bool(&expr, &c);
        });
    }

    #[test]
    fn shell_rendering_makes_each_value_one_word(s in any::<String>(), ctx in context()) {
        let t = Templates::new();
        let mut ctx = ctx;
        ctx["s"] = Value::String(s.clone());
        let c = minijinja::Value::from(minijinja::value::Serde(&ctx));
        let out = t.render_str("printf %s {{ s }} end", &c, true);
        let out = out.unwrap_or_else(|e| panic!("{e}"));
        let words = shlex::split(&out).unwrap_or_else(|| panic!("not shell words: {out:?}"));
        prop_assert_eq!(words.len(), 4, "{:?} -> {:?}", s, out);
        prop_assert_eq!(&words[2], &s.replace('\0', ""));
    }
}

// ------------------------------------------------------------------ known hostile shapes

#[test]
fn deep_nesting_and_alias_bombs_are_refused_or_survived() {
    let d = dir();
    let deep_seq = format!("steps: {}{}\n", "[".repeat(50_000), "]".repeat(50_000));
    let deep_map = format!("steps: {}{}\n", "{a: ".repeat(50_000), "}".repeat(50_000));
    let deep_block: String = (0..3000)
        .map(|i| format!("{}- \n", " ".repeat(i * 2)))
        .collect();
    let mut bomb = String::from("a: &a [x, x, x, x, x, x, x, x, x, x]\n");
    for i in 0..12 {
        bomb.push_str(&format!(
            "{}: &{} [*{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}]\n",
            (b'b' + i) as char,
            (b'b' + i) as char,
            p = (b'a' + i) as char
        ));
    }
    bomb.push_str("steps: []\n");
    let long_line = format!("name: {}\nsteps: []\n", "x".repeat(5_000_000));
    for (what, text) in [
        ("deep flow sequences", deep_seq),
        ("deep flow mappings", deep_map),
        ("deep block sequences", deep_block),
        ("an alias bomb", bomb),
        ("a 5 MB line", long_line),
    ] {
        let started = std::time::Instant::now();
        let path = d.path.join("deep.yml");
        std::fs::write(&path, &text).unwrap_or_else(|e| panic!("{e}"));
        let result = no_panic(what, what, || Playbook::load(&path).map(|_| ()));
        if let Err(e) = result {
            for err in &e.0 {
                assert_one_located(err, &text[..text.len().min(200)], what);
            }
        }
        assert!(
            started.elapsed() < std::time::Duration::from_secs(20),
            "{what} took {:?}",
            started.elapsed()
        );
        let inv = d.path.join("deep-inv.yml");
        std::fs::write(&inv, &text).unwrap_or_else(|e| panic!("{e}"));
        let _ = no_panic(what, what, || Inventory::load(Some(&inv)).map(|_| ()));
    }
}
