//! `group_vars/` and `host_vars/` beside an inventory file (or inside an inventory
//! directory), as Ansible's `host_group_vars` plugin reads them. For each group (and
//! host) `NAME`, in this order: `group_vars/NAME` if it is a directory (every YAML/JSON
//! file in it, recursively, in name order), else the files `NAME`, `NAME.yml`,
//! `NAME.yaml`, `NAME.json` that exist. Later files win. Each file must hold a mapping
//! (or nothing); errors are located.

use std::path::{Path, PathBuf};

use super::{Inventory, Vars};
use crate::error::{InputErrors, SourceError, SourceFile};
use crate::yaml::Value;

const EXTENSIONS: [&str; 4] = ["", ".yml", ".yaml", ".json"];

/// Loads `dir/group_vars` and `dir/host_vars` for every group and host of `inv`
/// (and for `localhost`, which may be implicit).
pub fn load(dir: &Path, inv: &mut Inventory, errors: &mut InputErrors) {
    let group_dir = dir.join("group_vars");
    if group_dir.is_dir() {
        let names: Vec<String> = inv.groups.keys().cloned().collect();
        for name in names {
            if let Some(vars) = load_entity(&group_dir, &name, errors) {
                merge_into(inv.group_file_vars.entry(name).or_default(), vars);
            }
        }
    }
    let host_dir = dir.join("host_vars");
    if host_dir.is_dir() {
        let mut names: Vec<String> = inv.hosts.keys().cloned().collect();
        if !inv.hosts.contains_key("localhost") {
            names.push("localhost".into());
        }
        for name in names {
            if let Some(vars) = load_entity(&host_dir, &name, errors) {
                merge_into(inv.host_file_vars.entry(name).or_default(), vars);
            }
        }
    }
}

fn merge_into(into: &mut Vars, vars: Vars) {
    for (k, v) in vars {
        into.insert(k, v);
    }
}

/// The merged variables of `base/name*`, or `None` when there is no such file.
fn load_entity(base: &Path, name: &str, errors: &mut InputErrors) -> Option<Vars> {
    // A name with a path separator or `..` would look outside the directory.
    if name.contains('/') || name == "." || name == ".." {
        return None;
    }
    let mut files: Vec<PathBuf> = Vec::new();
    let as_dir = base.join(name);
    if as_dir.is_dir() {
        collect_dir(&as_dir, &mut files, errors);
    } else {
        for ext in EXTENSIONS {
            let p = base.join(format!("{name}{ext}"));
            if p.is_file() {
                files.push(p);
            }
        }
    }
    if files.is_empty() {
        return None;
    }
    let mut vars = Vars::new();
    for f in files {
        merge_into(&mut vars, read_vars_file(&f, errors));
    }
    Some(vars)
}

fn collect_dir(dir: &Path, files: &mut Vec<PathBuf>, errors: &mut InputErrors) {
    let mut entries: Vec<PathBuf> = match std::fs::read_dir(dir) {
        Ok(rd) => rd.filter_map(|e| e.ok().map(|e| e.path())).collect(),
        Err(e) => {
            errors.push(
                SourceError::plain(format!("cannot read directory {}: {e}", dir.display()))
                    .with_help("check its permissions"),
            );
            return;
        }
    };
    entries.sort();
    for p in entries {
        let fname = p
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        if fname.starts_with('.') {
            continue;
        }
        if p.is_dir() {
            collect_dir(&p, files, errors);
        } else {
            let ext = p.extension().map(|e| e.to_string_lossy().to_string());
            if matches!(ext.as_deref(), None | Some("yml" | "yaml" | "json")) {
                files.push(p);
            }
        }
    }
}

/// One vars file: a YAML mapping of variables (nothing is no variables).
fn read_vars_file(path: &Path, errors: &mut InputErrors) -> Vars {
    let mut vars = Vars::new();
    let file = match SourceFile::read(path) {
        Ok(f) => f,
        Err(e) => {
            errors.push(e);
            return vars;
        }
    };
    let root = match crate::yaml::parse_yaml11(&file) {
        Ok(r) => r,
        Err(e) => {
            errors.push(e);
            return vars;
        }
    };
    match &root.value {
        Value::Null => {}
        Value::Map(entries) => {
            for (k, v) in entries {
                match k.scalar_text() {
                    Some(key) => {
                        vars.insert(key, v.to_json());
                    }
                    None => errors.push(
                        k.error(
                            &file,
                            format!("a variable name must be text, found {}", k.kind()),
                        )
                        .with_help("write `name: value`"),
                    ),
                }
            }
        }
        _ => errors.push(
            root.error(
                &file,
                format!(
                    "a variables file must be a mapping of names to values, found {}",
                    root.kind()
                ),
            )
            .with_help("write one `name: value` a line"),
        ),
    }
    vars
}
