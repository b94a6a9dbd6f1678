//! Templates: minijinja in every string of a playbook. Undefined variables are errors
//! (a typo must never become an empty string). Strings rendered for a shell (`command`,
//! `shell`, rollback commands) shell-quote every interpolated value unless it is marked
//! `| safe`. A string that is exactly one `{{ expression }}` renders to the expression's
//! own value, so lists and numbers pass through as such ("native" rendering).
//! Quoting ([`shell_quote`]) is context-free, so a secret is written the same way in
//! every command line and outputs can mask it there.

use minijinja::value::Value;
use minijinja::{AutoEscape, Environment, UndefinedBehavior};

/// Template name that selects shell quoting of interpolated values.
const SHELL: &str = "shell";
/// Template name for plain text.
const TEXT: &str = "text";

/// How many instructions one rendering may run: far more than any template that fills
/// a file or a command line needs, and a limit on one that would run for hours (two
/// nested loops over `range(100000)`), which would otherwise hang the run.
pub const FUEL: u64 = 10_000_000;

/// The template engine, shared by the whole run.
pub struct Templates {
    env: Environment<'static>,
}

impl std::fmt::Debug for Templates {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Templates")
    }
}

impl Default for Templates {
    fn default() -> Self {
        Templates::new()
    }
}

/// A template failed to compile or render; the message is minijinja's, made readable.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct TemplateError {
    /// What went wrong.
    pub message: String,
    /// The error is about an undefined variable (a dry run may call this "unknown").
    pub undefined: bool,
}

impl From<minijinja::Error> for TemplateError {
    fn from(e: minijinja::Error) -> Self {
        let undefined = e.kind() == minijinja::ErrorKind::UndefinedError;
        if e.kind() == minijinja::ErrorKind::OutOfFuel {
            return TemplateError {
                message: format!(
                    "the template ran more than {FUEL} instructions and was stopped: look for a loop that is too large or never ends"
                ),
                undefined,
            };
        }
        let mut message = e
            .detail()
            .map_or_else(|| e.kind().to_string(), |d| format!("{}: {d}", e.kind()));
        if undefined && message == e.kind().to_string() {
            message = "undefined variable (check the name, or define it in vars)".to_string();
        }
        TemplateError { message, undefined }
    }
}

impl Templates {
    /// An environment with strict undefined and the shell auto-escape.
    pub fn new() -> Self {
        let mut env = Environment::new();
        env.set_undefined_behavior(UndefinedBehavior::Strict);
        env.set_fuel(Some(FUEL));
        // A rendered file keeps its final newline.
        if let Ok(syntax) = minijinja::syntax::SyntaxConfig::builder()
            .keep_trailing_newline(true)
            .build()
        {
            env.set_syntax(syntax);
        }
        env.set_auto_escape_callback(|name| {
            if name == SHELL {
                AutoEscape::Custom(SHELL.into())
            } else {
                AutoEscape::None
            }
        });
        env.set_formatter(|out, state, value| {
            if matches!(state.auto_escape(), AutoEscape::Custom(name) if name == SHELL)
                && !value.is_safe()
            {
                let text = value.to_string();
                out.write_str(&shell_quote(&text))?;
                Ok(())
            } else {
                minijinja::escape_formatter(out, state, value)
            }
        });
        // Already quoted: marked safe so shell rendering does not quote it twice.
        env.add_filter("quote", |s: String| {
            Value::from_safe_string(shell_quote(&s))
        });
        env.add_filter("basename", |s: String| {
            std::path::Path::new(&s)
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default()
        });
        env.add_filter("dirname", |s: String| {
            std::path::Path::new(&s)
                .parent()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default()
        });
        env.add_filter("to_json", |v: Value| {
            serde_json::to_string(&v).unwrap_or_default()
        });
        // JSON text (a registered command's stdout) as data; bad JSON is an error that
        // says where the text stops being JSON.
        env.add_filter("from_json", |s: String| {
            serde_json::from_str::<serde_json::Value>(&s)
                .map(|j| Value::from(minijinja::value::Serde(j)))
                .map_err(|e| {
                    minijinja::Error::new(
                        minijinja::ErrorKind::InvalidOperation,
                        format!("from_json: the text is not JSON ({e})"),
                    )
                })
        });
        // Ansible's items2dict: a list of mappings to one mapping, each item's
        // `key_name` (default `key`) to its `value_name` (default `value`).
        env.add_filter(
            "items2dict",
            |items: Vec<Value>,
             kwargs: minijinja::value::Kwargs|
             -> Result<Value, minijinja::Error> {
                let key: Option<String> = kwargs.get("key_name")?;
                let value: Option<String> = kwargs.get("value_name")?;
                kwargs.assert_all_used()?;
                let (key, value) = (key.unwrap_or("key".into()), value.unwrap_or("value".into()));
                let mut out = std::collections::BTreeMap::new();
                for item in items {
                    let (k, v) = (item.get_attr(&key)?, item.get_attr(&value)?);
                    if k.is_undefined() || v.is_undefined() {
                        return Err(minijinja::Error::new(
                            minijinja::ErrorKind::InvalidOperation,
                            format!("items2dict: an item has no `{key}` or no `{value}`: {item}"),
                        ));
                    }
                    out.insert(k.to_string(), v);
                }
                Ok(Value::from(out))
            },
        );
        env.add_function("now", || {
            humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string()
        });
        Templates { env }
    }

    /// True when the string contains template syntax at all.
    pub fn is_template(s: &str) -> bool {
        s.contains("{{") || s.contains("{%")
    }

    /// Checks a template's syntax without rendering it (at load time).
    pub fn check_syntax(&self, source: &str) -> Result<(), TemplateError> {
        if !Self::is_template(source) {
            return Ok(());
        }
        self.env
            .template_from_named_str(TEXT, source)
            .map(|_| ())
            .map_err(Into::into)
    }

    /// Checks an expression's syntax (a `when`, an `assert`).
    pub fn check_expression(&self, source: &str) -> Result<(), TemplateError> {
        self.env
            .compile_expression(source)
            .map(|_| ())
            .map_err(Into::into)
    }

    /// Renders a string; with `shell`, interpolated values are shell-quoted.
    pub fn render_str(
        &self,
        source: &str,
        ctx: &Value,
        shell: bool,
    ) -> Result<String, TemplateError> {
        if !Self::is_template(source) {
            return Ok(source.to_string());
        }
        let name = if shell { SHELL } else { TEXT };
        Ok(self.env.render_named_str(name, source, ctx)?)
    }

    /// Evaluates an expression to a value; a bare undefined name is an error.
    pub fn eval(&self, expr: &str, ctx: &Value) -> Result<Value, TemplateError> {
        let compiled = self.env.compile_expression(expr)?;
        let value = compiled.eval(ctx)?;
        if value.is_undefined() {
            return Err(TemplateError {
                message: format!(
                    "`{}` is undefined (check the name, or define it in vars)",
                    expr.trim()
                ),
                undefined: true,
            });
        }
        Ok(value)
    }

    /// Evaluates a condition (`when`, `assert`).
    pub fn eval_bool(&self, expr: &str, ctx: &Value) -> Result<bool, TemplateError> {
        Ok(self.eval(expr, ctx)?.is_true())
    }

    /// Renders every string inside a JSON value. A string that is exactly one
    /// `{{ expr }}` becomes the expression's value.
    pub fn render_value(
        &self,
        value: &serde_json::Value,
        ctx: &Value,
        shell: bool,
    ) -> Result<serde_json::Value, TemplateError> {
        use serde_json::Value as J;
        Ok(match value {
            J::String(s) => {
                if let Some(expr) = sole_expression(s) {
                    let v = self.eval(expr, ctx)?;
                    if shell || v.is_safe() {
                        J::String(self.render_str(s, ctx, shell)?)
                    } else {
                        serde_json::to_value(&v).map_err(|e| TemplateError {
                            message: format!("cannot use the value of `{expr}`: {e}"),
                            undefined: false,
                        })?
                    }
                } else {
                    J::String(self.render_str(s, ctx, shell)?)
                }
            }
            J::Array(items) => J::Array(
                items
                    .iter()
                    .map(|v| self.render_value(v, ctx, shell))
                    .collect::<Result<_, _>>()?,
            ),
            J::Object(map) => J::Object(
                map.iter()
                    .map(|(k, v)| Ok((k.clone(), self.render_value(v, ctx, shell)?)))
                    .collect::<Result<_, TemplateError>>()?,
            ),
            other => other.clone(),
        })
    }
}

/// Quoting a value as one shell word (see [`crate::connection::quote`]), and how it
/// writes a text between single quotes.
pub use crate::connection::{quote as shell_quote, sq_content};

/// The expression of a string that is exactly `{{ expr }}`.
fn sole_expression(s: &str) -> Option<&str> {
    let t = s.trim();
    let inner = t.strip_prefix("{{")?.strip_suffix("}}")?;
    if inner.contains("{{") || inner.contains("}}") || inner.contains("{%") {
        return None;
    }
    Some(inner.trim())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx() -> Value {
        Value::from(minijinja::value::Serde(serde_json::json!({
            "name": "it's; $(rm -rf /)",
            "n": 3,
            "items": [1, 2],
        })))
    }

    #[test]
    fn shell_rendering_quotes_values_unless_safe() {
        let t = Templates::new();
        let out = t
            .render_str("echo {{ name }}", &ctx(), true)
            .unwrap_or_default();
        let words = shlex::split(&out).unwrap_or_default();
        assert_eq!(
            words,
            vec!["echo".to_string(), "it's; $(rm -rf /)".to_string()]
        );
        let safe = t
            .render_str("echo {{ 'a b' | safe }}", &ctx(), true)
            .unwrap_or_default();
        assert_eq!(safe, "echo a b");
    }

    #[test]
    fn items2dict_makes_a_mapping_as_ansible_does() {
        let t = Templates::new();
        let v = Value::from(minijinja::value::Serde(serde_json::json!({
            "units": [{"name": "a", "pidfile": "/run/a.pid"}, {"name": "b", "pidfile": "/run/b.pid"}],
            "pairs": [{"key": "k", "value": 1}],
            "odd": [{"name": "a"}],
        })));
        let out = t
            .render_str(
                "{{ (units | items2dict(key_name='name', value_name='pidfile')).b }} {{ (pairs | items2dict).k }}",
                &v,
                false,
            )
            .unwrap_or_default();
        assert_eq!(out, "/run/b.pid 1");
        let e = t
            .render_str(
                "{{ odd | items2dict(key_name='name', value_name='pidfile') }}",
                &v,
                false,
            )
            .map(|_| ())
            .unwrap_err();
        assert!(
            e.to_string().contains("has no `name` or no `pidfile`"),
            "{e}"
        );
    }

    #[test]
    fn from_json_reads_registered_text_as_data() {
        let t = Templates::new();
        let v = Value::from(minijinja::value::Serde(serde_json::json!({
            "out": "{\"chain\": \"c1\", \"n\": [1, 2]}",
            "bad": "{nope",
        })));
        let out = t
            .render_str(
                "{{ (out | from_json).chain }}-{{ (out | from_json).n[1] }}",
                &v,
                false,
            )
            .unwrap_or_default();
        assert_eq!(out, "c1-2");
        let e = t
            .render_str("{{ bad | from_json }}", &v, false)
            .map(|_| ())
            .unwrap_err();
        assert!(
            e.to_string().contains("from_json: the text is not JSON"),
            "{e}"
        );
    }

    #[test]
    fn quoting_is_one_word_and_does_not_depend_on_the_context() {
        for s in [
            "",
            "plain-1.2:x@y/z",
            "it's",
            "a b",
            "$(x)`y`",
            "\\",
            "\n",
            "ü",
            "-rf",
            "*",
        ] {
            let q = shell_quote(s);
            assert_eq!(shlex::split(&q), Some(vec![s.to_string()]), "{s:?} -> {q}");
        }
        let secret = "pw'x";
        for word in ["pw'x", "a pw'x", "pw'x$", "'pw'x'"] {
            assert!(shell_quote(word).contains(&sq_content(secret)), "{word}");
        }
    }

    #[test]
    fn a_template_that_would_run_for_hours_is_stopped() {
        let t = Templates::new();
        let e = t
            .render_str(
                "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}",
                &ctx(),
                false,
            )
            .err()
            .map(|e| e.message);
        assert!(
            e.as_deref()
                .is_some_and(|m| m.contains("ran more than 10000000 instructions")),
            "{e:?}"
        );
        // A big template that ends is not stopped.
        let out = t.render_str("{% for i in range(20000) %}.{% endfor %}", &ctx(), false);
        assert_eq!(out.ok().map(|s| s.len()), Some(20000));
    }

    #[test]
    fn undefined_is_an_error_not_empty() {
        let t = Templates::new();
        let e = t.render_str("x {{ nmae }}", &ctx(), false).err();
        assert!(e.is_some_and(|e| e.undefined));
        let e = t.eval("nmae", &ctx()).err();
        assert!(e.is_some_and(|e| e.undefined));
    }

    #[test]
    fn sole_expressions_keep_their_type() {
        let t = Templates::new();
        let v = t.render_value(
            &serde_json::json!({"a": "{{ items }}", "b": "n={{ n }}"}),
            &ctx(),
            false,
        );
        assert_eq!(v.ok(), Some(serde_json::json!({"a": [1, 2], "b": "n=3"})));
    }
}
