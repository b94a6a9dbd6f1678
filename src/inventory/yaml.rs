//! The YAML inventory reader (also JSON files, JSON being YAML), as Ansible's `yaml`
//! plugin reads it: top-level keys are groups (usually just `all`); each group is a
//! mapping with `hosts` (host name -> variables or nothing), `children` (group name ->
//! the same structure) and `vars`. A host may be listed in several groups; its
//! variables accumulate. Host names may hold ranges (`node[01:03]`) and a port
//! (`web1:2222`). Every shape error points at the file, line and column.

use crate::error::{InputErrors, SourceFile, did_you_mean};
use crate::yaml::{Node, Value};

use super::{Inventory, ranges};

const GROUP_KEYS: [&str; 3] = ["hosts", "children", "vars"];

/// Reads the YAML inventory `file` into `inv`, adding located errors to `errors`.
pub fn parse(file: &SourceFile, inv: &mut Inventory, errors: &mut InputErrors) {
    let root = match crate::yaml::parse_yaml11(file) {
        Ok(r) => r,
        Err(e) => {
            errors.push(e);
            return;
        }
    };
    match &root.value {
        Value::Null => {}
        Value::Map(entries) => {
            for (k, v) in entries {
                if let Some(name) = group_name(file, k, errors) {
                    group(file, &name, v, inv, errors);
                }
            }
        }
        _ => errors.push(
            root.error(
                file,
                format!(
                    "an inventory must be a mapping of groups, found {}",
                    root.kind()
                ),
            )
            .with_help("start with `all:` and put `hosts:`, `children:` and `vars:` under it"),
        ),
    }
}

fn group_name(file: &SourceFile, key: &Node, errors: &mut InputErrors) -> Option<String> {
    match key.scalar_text() {
        Some(s) if !s.trim().is_empty() && !s.chars().any(char::is_whitespace) => Some(s),
        _ => {
            errors.push(
                key.error(file, "a group name must be a word with no spaces")
                    .with_help("name groups like `webservers` or `nova-api`"),
            );
            None
        }
    }
}

fn group(
    file: &SourceFile,
    name: &str,
    node: &Node,
    inv: &mut Inventory,
    errors: &mut InputErrors,
) {
    inv.add_group(name);
    let entries = match &node.value {
        Value::Null => return,
        Value::Map(entries) => entries,
        _ => {
            errors.push(
                node.error(
                    file,
                    format!("group `{name}` must be a mapping with hosts, children or vars, found {}", node.kind()),
                )
                .with_help("write `hosts:` (a mapping of host names), `children:` (a mapping of groups) or `vars:`"),
            );
            return;
        }
    };
    for (k, v) in entries {
        match k.as_str() {
            Some("vars") => match &v.value {
                Value::Null => {}
                Value::Map(vars) => {
                    for (vk, vv) in vars {
                        if let Some(key) = var_name(file, vk, errors) {
                            inv.set_group_var(name, &key, vv.to_json());
                        }
                    }
                }
                _ => errors.push(
                    v.error(file, format!("`vars` of group `{name}` must be a mapping, found {}", v.kind()))
                        .with_help("write variables as `name: value` lines under `vars:`"),
                ),
            },
            Some("children") => match &v.value {
                Value::Null => {}
                Value::Map(kids) => {
                    for (ck, cv) in kids {
                        let Some(child) = group_name(file, ck, errors) else {
                            continue;
                        };
                        if child == name {
                            errors.push(
                                ck.error(file, format!("group `{name}` cannot be its own child"))
                                    .with_help("remove this entry"),
                            );
                            continue;
                        }
                        group(file, &child, cv, inv, errors);
                        inv.add_child(name, &child, Some(ck.location(file)));
                    }
                }
                _ => errors.push(
                    v.error(
                        file,
                        format!("`children` of group `{name}` must be a mapping of group names, found {}", v.kind()),
                    )
                    .with_help("write each child group as a key: `children:\\n  web:\\n  db:`"),
                ),
            },
            Some("hosts") => match &v.value {
                Value::Null => {}
                Value::Map(hosts) => {
                    for (hk, hv) in hosts {
                        host(file, name, hk, hv, inv, errors);
                    }
                }
                _ => errors.push(
                    v.error(
                        file,
                        format!("`hosts` of group `{name}` must be a mapping of host names, found {}", v.kind()),
                    )
                    .with_help("write each host as a key, with its variables or nothing: `hosts:\\n  web1:\\n  web2:`"),
                ),
            },
            _ => {
                let key = k.scalar_text().unwrap_or_default();
                let mut e = k.error(
                    file,
                    format!("unknown key `{key}` in group `{name}`: a group has only hosts, children and vars"),
                );
                e = match did_you_mean(&key, GROUP_KEYS) {
                    Some(s) => e.with_help(format!("did you mean `{s}`?")),
                    None => e.with_help(format!(
                        "to make `{key}` a child group, put it under `children:`"
                    )),
                };
                errors.push(e);
            }
        }
    }
}

fn var_name(file: &SourceFile, key: &Node, errors: &mut InputErrors) -> Option<String> {
    match key.scalar_text() {
        Some(s) => Some(s),
        None => {
            errors.push(
                key.error(
                    file,
                    format!("a variable name must be text, found {}", key.kind()),
                )
                .with_help("write `name: value`"),
            );
            None
        }
    }
}

fn host(
    file: &SourceFile,
    group: &str,
    key: &Node,
    vars: &Node,
    inv: &mut Inventory,
    errors: &mut InputErrors,
) {
    let Some(pattern) = key.scalar_text().filter(|s| !s.trim().is_empty()) else {
        errors.push(
            key.error(
                file,
                format!("a host name must be text, found {}", key.kind()),
            )
            .with_help("write host names as keys: `web1:`"),
        );
        return;
    };
    let (name, port) = match ranges::split_port(&pattern) {
        Ok(x) => x,
        Err(msg) => {
            errors.push(
                key.error(file, msg)
                    .with_help("write `name` or `name:port`"),
            );
            return;
        }
    };
    let names = match ranges::expand(name) {
        Ok(n) => n,
        Err(msg) => {
            errors.push(
                key.error(file, msg)
                    .with_help("a range is `[01:10]`, `[a:f]` or `[1:10:2]`"),
            );
            return;
        }
    };
    let entries: &[(Node, Node)] = match &vars.value {
        Value::Null => &[],
        Value::Map(entries) => entries,
        _ => {
            errors.push(
                vars.error(
                    file,
                    format!(
                        "variables of host `{pattern}` must be a mapping, found {}",
                        vars.kind()
                    ),
                )
                .with_help("write `name: value` lines under the host, or nothing"),
            );
            return;
        }
    };
    let mut pairs = Vec::new();
    for (k, v) in entries {
        if let Some(key) = var_name(file, k, errors) {
            pairs.push((key, v.to_json()));
        }
    }
    for h in names {
        inv.add_host(&h, group);
        if let Some(p) = port {
            inv.set_host_var(&h, "ansible_port", serde_json::Value::from(p));
        }
        for (k, v) in &pairs {
            inv.set_host_var(&h, k, v.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn load(text: &str) -> Result<Inventory, InputErrors> {
        Inventory::from_yaml(&SourceFile::new("inv.yml", text))
    }

    fn first_error(text: &str) -> String {
        match load(text) {
            Ok(_) => panic!("expected an error for {text:?}"),
            Err(e) => e.0.first().map(|e| e.to_string()).unwrap_or_default(),
        }
    }

    #[test]
    fn reads_groups_hosts_children_vars() {
        let i = load(
            "all:\n  vars:\n    x: 1\n  hosts:\n    solo:\n  children:\n    web:\n      hosts:\n        w[1:2]:\n          port: 80\n      vars:\n        x: 2\n    db:\n      hosts:\n        w1:\n          extra: true\n",
        )
        .unwrap_or_default();
        assert_eq!(i.hosts(), vec!["solo", "w1", "w2"]);
        assert_eq!(i.select("ungrouped"), Ok(vec!["solo".to_string()]));
        let v = i.host_vars("w1");
        assert_eq!(v["x"], json!(2));
        assert_eq!(v["port"], json!(80));
        assert_eq!(v["extra"], json!(true));
        assert_eq!(i.host_vars("solo")["x"], json!(1));
        assert_eq!(i.group_names("w1"), vec!["db", "web"]);
    }

    #[test]
    fn shape_errors_are_located() {
        let e = first_error("all:\n  hosts:\n    web1:\n      - a\n");
        assert!(
            e.contains("variables of host `web1` must be a mapping, found a list"),
            "{e}"
        );
        assert!(e.contains("inv.yml:4:7"), "{e}");
        let e = first_error("all:\n  children:\n    - web\n");
        assert!(
            e.contains("`children` of group `all` must be a mapping of group names, found a list"),
            "{e}"
        );
        assert!(e.contains("inv.yml:3:5"), "{e}");
        let e = first_error("all:\n  host:\n    a:\n");
        assert!(e.contains("unknown key `host` in group `all`"), "{e}");
        assert!(e.contains("did you mean `hosts`?"), "{e}");
        let e = first_error("- a\n");
        assert!(
            e.contains("an inventory must be a mapping of groups"),
            "{e}"
        );
        let e = first_error(
            "all:\n  children:\n    a:\n      children:\n        b:\n          children:\n            a:\n",
        );
        assert!(
            e.contains("group `a` is its own ancestor: a -> b -> a"),
            "{e}"
        );
        assert!(e.contains("inv.yml:7:13"), "{e}");
    }

    #[test]
    fn malformed_documents_do_not_panic() {
        for text in [
            "all: 3",
            "all:\n  hosts: [a]",
            "all:\n  vars: [1]",
            "? [a]\n: 1",
            "all:\n  hosts:\n    ? [x]\n    : 1",
            "all:\n  hosts:\n    'n[9:1]':",
            "all:\n  children:\n    all:",
            "{",
            "all:\n  hosts:\n    'a:x':",
            "[1, 2]",
            "~",
            "all:\n  children:\n    'a b':",
        ] {
            let _ = load(text);
        }
    }
}
