//! What the backup and recovery modules (`service`, `rsync`, `archive`, `unarchive`,
//! `manifest`, `verify_manifest`, `move_aside`, `prune`) share: string-or-list
//! arguments, load-time checks of choice arguments, running a host script with a clear
//! failure, the host's clock, and the relative-path safety check.

use serde::{Deserialize, Deserializer};
use serde_json::Value as Json;

use super::{ModuleContext, ModuleError};
use crate::connection::{CommandOutput, CommandSpec};
use crate::error::{SourceError, SourceFile, did_you_mean};
use crate::template::Templates;
use crate::yaml::Node;

/// Reads a string or a list of strings (numbers are taken as their text) into a list.
pub(crate) fn str_list<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    fn one<E: serde::de::Error>(v: Json) -> Result<String, E> {
        match v {
            Json::String(s) => Ok(s),
            Json::Number(n) => Ok(n.to_string()),
            other => Err(E::custom(format!("expected a string, found {other}"))),
        }
    }
    match Option::<Json>::deserialize(d)? {
        None | Some(Json::Null) => Ok(Vec::new()),
        Some(Json::Array(items)) => items.into_iter().map(one).collect(),
        Some(v) => Ok(vec![one(v)?]),
    }
}

/// Load-time check that `key`, when given as a literal, is one of `choices`.
pub(crate) fn check_choice(
    args: &Node,
    file: &SourceFile,
    module: &str,
    key: &str,
    choices: &[&str],
) -> Vec<SourceError> {
    let Some(node) = args.get(key) else {
        return Vec::new();
    };
    let Some(value) = node.scalar_text() else {
        return Vec::new();
    };
    if Templates::is_template(&value) || choices.contains(&value.as_str()) {
        return Vec::new();
    }
    let e = node.error(file, format!("unknown {key} `{value}` for `{module}`"));
    let e = match did_you_mean(&value, choices.iter().copied()) {
        Some(s) => e.with_help(format!("did you mean `{s}`?")),
        None => e.with_help(format!("{key} is one of: {}", choices.join(", "))),
    };
    vec![e]
}

/// Run-time check of a choice argument (after rendering).
pub(crate) fn choice<'a>(
    module: &str,
    key: &str,
    value: &'a str,
    choices: &[&str],
) -> Result<&'a str, ModuleError> {
    if choices.contains(&value) {
        Ok(value)
    } else {
        Err(ModuleError::Args(format!(
            "{module}: unknown {key} `{value}` (one of: {})",
            choices.join(", ")
        )))
    }
}

/// Runs a shell script on the host (streamed with `-v`) and fails with `what` and the
/// script's standard error unless it exits 0.
pub(crate) async fn script_ok(
    ctx: &ModuleContext,
    what: &str,
    script: String,
) -> Result<CommandOutput, ModuleError> {
    let out = ctx.run(CommandSpec::shell(script)).await?;
    if out.success() {
        Ok(out)
    } else {
        Err(failed_with(what, out))
    }
}

/// A failure carrying a command's output, with its exit status and standard error.
pub(crate) fn failed_with(what: &str, out: CommandOutput) -> ModuleError {
    let rc = out
        .rc
        .map_or("no exit status".to_string(), |c| format!("exit {c}"));
    ModuleError::Failed {
        message: format!("{what} ({rc}): {}", out.stderr_text().trim()),
        output: Some(out),
    }
}

/// The host's clock as a compact UTC timestamp, `20240131T235959Z`.
pub(crate) async fn host_timestamp(ctx: &ModuleContext) -> Result<String, ModuleError> {
    let out = ctx
        .probe(CommandSpec::argv(["date", "-u", "+%Y%m%dT%H%M%SZ"]))
        .await?;
    let t = out.stdout_text().trim().to_string();
    if out.success() && !t.is_empty() {
        Ok(t)
    } else {
        Err(failed_with("cannot read the host's clock", out))
    }
}

/// The host's clock in seconds since the epoch.
pub(crate) async fn host_epoch(ctx: &ModuleContext) -> Result<f64, ModuleError> {
    let out = ctx.probe(CommandSpec::argv(["date", "+%s"])).await?;
    out.stdout_text()
        .trim()
        .parse::<f64>()
        .ok()
        .filter(|_| out.success())
        .ok_or_else(|| failed_with("cannot read the host's clock", out))
}

/// Whether a host path exists (a dangling link counts).
pub(crate) async fn exists(ctx: &ModuleContext, path: &str) -> Result<bool, ModuleError> {
    Ok(ctx.stat(path).await?.is_some())
}

/// Whether a path inside an archive or a tree would stay below its root: not absolute,
/// no `..` component.
pub(crate) fn stays_inside(name: &str) -> bool {
    !name.starts_with('/') && !name.split('/').any(|c| c == "..")
}

/// Splits NUL-terminated records, dropping a final empty one.
pub(crate) fn nul_records(bytes: &[u8]) -> impl Iterator<Item = String> + '_ {
    bytes
        .split(|b| *b == 0)
        .filter(|r| !r.is_empty())
        .map(|r| String::from_utf8_lossy(r).into_owned())
}

/// Refuses paths that must never be moved, removed or written over whole.
pub(crate) fn refuse_root(module: &str, path: &str) -> Result<(), ModuleError> {
    let t = path.trim_end_matches('/');
    if t.is_empty() || t == "." {
        Err(ModuleError::Args(format!(
            "{module}: refusing to work on `{path}`"
        )))
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inside_or_not() {
        assert!(stays_inside("nova/nova.conf"));
        assert!(stays_inside("./a/b"));
        assert!(stays_inside("a..b/c"));
        assert!(!stays_inside("../x"));
        assert!(!stays_inside("a/../../x"));
        assert!(!stays_inside("/etc/passwd"));
    }

    #[test]
    fn records() {
        let v: Vec<String> = nul_records(b"a\0b c\0\0").collect();
        assert_eq!(v, vec!["a", "b c"]);
    }
}
