//! Dynamic inventories: an executable run with `--list` that prints JSON in Ansible's
//! contract. Top-level keys are groups, each `{"hosts": [...], "vars": {...},
//! "children": [...]}` or a bare list of hosts (a mapping with none of those keys is
//! a host of the group's name with those variables, as Ansible reads it);
//! `_meta.hostvars` gives each host's variables. Without `_meta`, the script is run
//! again with `--host NAME` for each host, as Ansible does. A script that fails, takes
//! more than a minute, or prints something else is a clear error naming it and
//! showing its stderr.

use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value as Json;

use super::{Inventory, Vars};
use crate::error::{InputErrors, Location, SourceError, SourceFile};

/// How long a script may run.
const TIMEOUT: Duration = Duration::from_secs(60);

/// Runs the script at `path` and reads its inventory into `inv`.
pub fn load(path: &Path, inv: &mut Inventory, errors: &mut InputErrors) {
    let source = path.display().to_string();
    let text = match run(path, &["--list"]) {
        Ok(t) => t,
        Err(e) => {
            errors.push(e);
            return;
        }
    };
    let mut host_vars = |host: &str| -> Result<Vars, SourceError> {
        let out = run(path, &["--host", host])?;
        let what = format!("{source} --host {host}");
        match parse_json(&what, &out)? {
            Json::Object(m) => Ok(m.into_iter().collect()),
            Json::Null => Ok(Vars::new()),
            other => Err(SourceError::plain(format!(
                "inventory script `{what}` printed {}, not a mapping of variables",
                json_kind(&other)
            ))
            .with_help("`--host NAME` must print a JSON object (`{}` for no variables)")),
        }
    };
    parse_list(&source, &text, inv, errors, &mut host_vars);
}

/// Runs `path args...` with a timeout; its stdout, or an error showing its stderr.
fn run(path: &Path, args: &[&str]) -> Result<String, SourceError> {
    let shown = format!("{} {}", path.display(), args.join(" "));
    let help = format!("run `{shown}` by hand: it must print JSON and exit with status 0");
    // The script named, never a command of that name found in PATH (`-i inventory.sh`
    // is the file in this directory, as for Ansible).
    let program = std::path::absolute(path).unwrap_or_else(|_| Path::new(".").join(path));
    let mut child = Command::new(&program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| {
            let help = match e.kind() {
                std::io::ErrorKind::PermissionDenied => {
                    format!("make it executable (`chmod +x {}`), or give a static inventory", path.display())
                }
                std::io::ErrorKind::NotFound if program.is_file() => {
                    "its `#!` line names an interpreter that is not installed: install it or fix the line".to_string()
                }
                _ => "check the path, and that the script can run on this machine".to_string(),
            };
            SourceError::plain(format!("cannot run inventory script `{shown}`: {e}")).with_help(help)
        })?;
    let mut stdout = child.stdout.take();
    let mut stderr = child.stderr.take();
    let out_thread = std::thread::spawn(move || {
        let mut buf = Vec::new();
        if let Some(s) = stdout.as_mut() {
            let _ = s.read_to_end(&mut buf);
        }
        buf
    });
    let err_thread = std::thread::spawn(move || {
        let mut buf = Vec::new();
        if let Some(s) = stderr.as_mut() {
            let _ = s.read_to_end(&mut buf);
        }
        buf
    });
    let start = Instant::now();
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if start.elapsed() > TIMEOUT => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(SourceError::plain(format!(
                    "inventory script `{shown}` did not finish within {} seconds",
                    TIMEOUT.as_secs()
                ))
                .with_help(help));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(10)),
            Err(e) => {
                return Err(SourceError::plain(format!(
                    "cannot wait for inventory script `{shown}`: {e}"
                )));
            }
        }
    };
    let out = out_thread.join().unwrap_or_default();
    let err = err_thread.join().unwrap_or_default();
    let stderr_text = String::from_utf8_lossy(&err).trim().to_string();
    if !status.success() {
        let code = status.code().map_or_else(
            || "was killed by a signal".to_string(),
            |c| format!("exited with status {c}"),
        );
        let mut msg = format!("inventory script `{shown}` {code}");
        if !stderr_text.is_empty() {
            msg.push_str(&format!("; its stderr:\n{stderr_text}"));
        }
        return Err(SourceError::plain(msg).with_help(help));
    }
    String::from_utf8(out).map_err(|_| {
        SourceError::plain(format!(
            "inventory script `{shown}` printed bytes that are not UTF-8"
        ))
        .with_help(help)
    })
}

/// JSON text to a value, with a located error (in a pseudo-file named `what`).
fn parse_json(what: &str, text: &str) -> Result<Json, SourceError> {
    serde_json::from_str(text).map_err(|e| {
        let file = SourceFile::new(format!("{what} (output)"), text);
        SourceError::at(
            Location::new(&file, e.line(), e.column(), 1),
            format!("inventory script `{what}` did not print valid JSON: {e}"),
        )
        .with_help(format!(
            "run `{what}` by hand; it must print only JSON on stdout (messages go to stderr)"
        ))
    })
}

fn json_kind(v: &Json) -> &'static str {
    match v {
        Json::Null => "null",
        Json::Bool(_) => "a boolean",
        Json::Number(_) => "a number",
        Json::String(_) => "a string",
        Json::Array(_) => "a list",
        Json::Object(_) => "a mapping",
    }
}

/// Reads `--list` output `text` of `source` into `inv`. `host_vars` gives a host's
/// variables when the output has no `_meta` (Ansible runs `--host NAME`).
pub(crate) fn parse_list(
    source: &str,
    text: &str,
    inv: &mut Inventory,
    errors: &mut InputErrors,
    host_vars: &mut dyn FnMut(&str) -> Result<Vars, SourceError>,
) {
    let what = format!("{source} --list");
    let root = match parse_json(&what, text) {
        Ok(r) => r,
        Err(e) => {
            errors.push(e);
            return;
        }
    };
    let Json::Object(top) = root else {
        errors.push(
            SourceError::plain(format!(
                "inventory script `{what}` printed {}, not a mapping of groups",
                json_kind(&root)
            ))
            .with_help("print `{\"group\": {\"hosts\": [...]}, \"_meta\": {\"hostvars\": {...}}}`"),
        );
        return;
    };
    let shape_error = |msg: String| {
        SourceError::plain(format!("inventory script `{what}`: {msg}"))
            .with_help("see Ansible's dynamic inventory format: groups with `hosts` (a list), `vars` (a mapping), `children` (a list)")
    };
    let meta = top.get("_meta").cloned();
    for (group, data) in &top {
        if group == "_meta" {
            continue;
        }
        inv.add_group(group);
        let data = match data {
            Json::Object(m)
                if ["hosts", "vars", "children"]
                    .iter()
                    .any(|k| m.contains_key(*k)) =>
            {
                m.clone()
            }
            Json::Object(m) => {
                // Ansible: a host named like the group, with these variables.
                let mut d = serde_json::Map::new();
                d.insert("hosts".into(), Json::from(vec![group.clone()]));
                d.insert("vars".into(), Json::Object(m.clone()));
                d
            }
            other => {
                let mut d = serde_json::Map::new();
                d.insert("hosts".into(), other.clone());
                d
            }
        };
        match data.get("hosts") {
            None | Some(Json::Null) => {}
            Some(Json::Array(hosts)) => {
                for h in hosts {
                    match h {
                        Json::String(h) if !h.trim().is_empty() => inv.add_host(h, group),
                        other => errors.push(shape_error(format!(
                            "a host of group `{group}` is {}, not a host name",
                            json_kind(other)
                        ))),
                    }
                }
            }
            Some(other) => errors.push(shape_error(format!(
                "`hosts` of group `{group}` is {}, not a list",
                json_kind(other)
            ))),
        }
        match data.get("vars") {
            None | Some(Json::Null) => {}
            Some(Json::Object(vars)) => {
                for (k, v) in vars {
                    inv.set_group_var(group, k, v.clone());
                }
            }
            Some(other) => errors.push(shape_error(format!(
                "`vars` of group `{group}` is {}, not a mapping",
                json_kind(other)
            ))),
        }
        match data.get("children") {
            None | Some(Json::Null) => {}
            Some(Json::Array(kids)) => {
                for k in kids {
                    match k {
                        Json::String(k) if k != group => inv.add_child(group, k, None),
                        Json::String(_) => errors.push(shape_error(format!(
                            "group `{group}` lists itself as a child"
                        ))),
                        other => errors.push(shape_error(format!(
                            "a child of group `{group}` is {}, not a group name",
                            json_kind(other)
                        ))),
                    }
                }
            }
            Some(other) => errors.push(shape_error(format!(
                "`children` of group `{group}` is {}, not a list",
                json_kind(other)
            ))),
        }
    }
    let hosts: Vec<String> = inv.hosts.keys().cloned().collect();
    match meta {
        Some(Json::Object(meta)) => match meta.get("hostvars") {
            None | Some(Json::Null) => {}
            Some(Json::Object(hv)) => {
                for (host, vars) in hv {
                    match vars {
                        Json::Object(vars) => {
                            if !inv.hosts.contains_key(host) {
                                // Ansible adds hosts that only appear in hostvars.
                                inv.add_host(host, "ungrouped");
                            }
                            for (k, v) in vars {
                                inv.set_host_var(host, k, v.clone());
                            }
                        }
                        Json::Null => {}
                        other => errors.push(shape_error(format!(
                            "`_meta.hostvars.{host}` is {}, not a mapping",
                            json_kind(other)
                        ))),
                    }
                }
            }
            Some(other) => errors.push(shape_error(format!(
                "`_meta.hostvars` is {}, not a mapping",
                json_kind(other)
            ))),
        },
        Some(other) => errors.push(shape_error(format!(
            "`_meta` is {}, not a mapping",
            json_kind(&other)
        ))),
        None => {
            for host in hosts {
                match host_vars(&host) {
                    Ok(vars) => {
                        for (k, v) in vars {
                            inv.set_host_var(&host, &k, v);
                        }
                    }
                    Err(e) => errors.push(e),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn reads_ansible_contract() {
        let text = r#"{
            "web": {"hosts": ["w1", "w2"], "vars": {"port": 80}},
            "db": ["d1"],
            "app": {"children": ["web", "db"]},
            "_meta": {"hostvars": {"w1": {"ansible_host": "10.0.0.1"}}}
        }"#;
        let i = Inventory::from_dynamic_json("inv.sh", text).unwrap_or_default();
        assert_eq!(i.hosts(), vec!["w1", "w2", "d1"]);
        assert_eq!(i.select("app").map(|h| h.len()), Ok(3));
        assert_eq!(i.host_vars("w2")["port"], json!(80));
        assert_eq!(i.connection("w1").address, "10.0.0.1");
    }

    #[test]
    fn bad_output_is_located() {
        let e = Inventory::from_dynamic_json("inv.sh", "{\n  \"web\": [\n}").err();
        let text = e.map(|e| e.to_string()).unwrap_or_default();
        assert!(
            text.contains("inventory script `inv.sh --list` did not print valid JSON"),
            "{text}"
        );
        assert!(text.contains("inv.sh --list (output):3:1"), "{text}");
        let e = Inventory::from_dynamic_json("inv.sh", "{\"web\": {\"hosts\": \"w1\"}}").err();
        let text = e.map(|e| e.to_string()).unwrap_or_default();
        assert!(
            text.contains("`hosts` of group `web` is a string, not a list"),
            "{text}"
        );
        for bad in [
            "[]",
            "3",
            "{\"_meta\": 1}",
            "{\"a\": {\"children\": [1]}}",
            "{\"a\": {\"vars\": []}}",
            "",
        ] {
            assert!(Inventory::from_dynamic_json("x", bad).is_err(), "{bad}");
        }
    }
}
