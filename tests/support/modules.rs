//! What the tests that call modules directly share (`backup_modules.rs`,
//! `modules_files.rs`, `mysql.rs`): a `ModuleContext` over the local connection to adjust
//! with struct update syntax, running a module and its undo by name, and the load-time
//! check of one step's arguments.
//!
//! Included by `support/mod.rs` (as `support::modules`), and by tests that do not use
//! `mod support;` with `#[path = "support/modules.rs"] mod modules;`.

#![allow(dead_code)]

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use lifeboat::connection::LocalConnection;
use lifeboat::error::{SourceError, SourceFile};
use lifeboat::modules::{ModuleContext, ModuleError, Outcome, lookup, validate_args};
use lifeboat::template::Templates;
use serde_json::Value as Json;

/// A context for `host` over the local connection (named `host` too): a real run (no
/// dry run, no diff), a 60 s timeout, no become, no output sink, no variables, the
/// system's temporary directory as base dir, run id `test`. Change what a test needs:
/// `ModuleContext { check: true, ..context("db1") }`.
pub fn context(host: &str) -> ModuleContext {
    ModuleContext {
        host: host.to_string(),
        conn: Arc::new(LocalConnection::new(host)),
        check: false,
        diff: false,
        timeout: Some(Duration::from_secs(60)),
        become_: None,
        sink: None,
        templates: Arc::new(Templates::new()),
        vars: vars(Json::Object(Default::default())),
        base_dir: std::env::temp_dir(),
        run_id: "test".to_string(),
    }
}

/// Template variables from JSON.
pub fn vars(json: Json) -> minijinja::Value {
    minijinja::Value::from(minijinja::value::Serde(json))
}

/// A fixture directory under `tests/fixtures`.
pub fn fixtures(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

/// Runs a module by name.
pub async fn run(module: &str, ctx: &ModuleContext, args: &Json) -> Result<Outcome, ModuleError> {
    let m = lookup(module).expect("module is registered");
    m.run(ctx, args).await
}

/// Runs a module that must succeed (panics with its error otherwise).
pub async fn ok(module: &str, ctx: &ModuleContext, args: &Json) -> Outcome {
    match run(module, ctx, args).await {
        Ok(o) => o,
        Err(e) => panic!("{module} failed: {e}"),
    }
}

/// Runs a module's undo with the undo data its run captured.
pub async fn undo(
    module: &str,
    ctx: &ModuleContext,
    args: &Json,
    outcome: &Outcome,
) -> Result<Outcome, ModuleError> {
    let m = lookup(module).expect("module is registered");
    let data = outcome.undo.clone().expect("the step captured undo data");
    m.undo(ctx, args, &data).await
}

/// The error of a run that must fail (panics when it succeeded).
pub fn failure(r: Result<Outcome, ModuleError>) -> String {
    match r {
        Ok(o) => panic!("expected a failure, got {o:?}"),
        Err(e) => e.to_string(),
    }
}

/// The load-time errors of a one-step YAML mapping (`module: {args}`), as the playbook
/// loader checks it.
pub fn validate(step: &str) -> Vec<SourceError> {
    let file = SourceFile::new("play.yml", step);
    let node = lifeboat::yaml::parse(&file).expect("valid YAML");
    let entries = node.as_map().expect("a mapping");
    let (key, value) = &entries[0];
    let module = lookup(key.as_str().expect("a module key")).expect("a module");
    validate_args(&*module, key, value, &file)
}

/// [`validate`]'s errors as the text a person reads (place, message, help).
pub fn validation_messages(step: &str) -> Vec<String> {
    validate(step).into_iter().map(|e| e.to_string()).collect()
}

/// The load-time errors of the first step of a module's documented example, which must
/// use the module.
pub fn example_errors(name: &str) -> Vec<SourceError> {
    let doc = lookup(name).expect("registered").doc();
    let file = SourceFile::new("example.yml", doc.example);
    let parsed = lifeboat::yaml::parse(&file).expect("example parses");
    let step = &parsed.as_seq().expect("a list with one step")[0];
    let (key, value) = step
        .as_map()
        .expect("a step mapping")
        .iter()
        .find(|(k, _)| k.as_str() == Some(name))
        .expect("the example uses the module");
    validate_args(&*lookup(name).expect("registered"), key, value, &file)
}
