//! What the project ships loads: every playbook and drill validates against every
//! example inventory, and each inventory resolves the groups the OpenStack playbooks
//! name. (The mini-cloud tests run them; this catches a shipped file that no longer
//! loads with an inventory no test runs against.)

#[path = "support/binary.rs"]
mod binary;

use std::path::{Path, PathBuf};

use binary::Lifeboat;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn yml_files(dir: &str) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(root().join(dir))
        .unwrap_or_else(|e| panic!("{dir}: {e}"))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "yml"))
        .collect();
    out.sort();
    out
}

const INVENTORIES: [&str; 3] = [
    "inventory/multinode",
    "inventory/yaml/hosts.yml",
    "inventory/local/hosts.ini",
];

/// `lifeboat ARGS` in the repository (read-only commands), its state elsewhere.
fn lifeboat(args: &[&str]) -> (i32, String, String) {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let out = Lifeboat::new(dir.path())
        .current_dir(root())
        .args(args)
        .run();
    (out.code, out.stdout, out.stderr)
}

#[test]
fn every_shipped_playbook_and_drill_validates_with_every_example_inventory() {
    let mut files = yml_files("playbooks/openstack");
    files.extend(yml_files("playbooks/demo"));
    files.extend(yml_files("drills"));
    assert!(files.len() >= 8, "{files:?}");
    for inv in INVENTORIES {
        let mut args = vec!["validate", "-i", inv];
        let names: Vec<String> = files.iter().map(|f| f.display().to_string()).collect();
        args.extend(names.iter().map(String::as_str));
        let (code, stdout, stderr) = lifeboat(&args);
        assert_eq!(code, 0, "with {inv}:\n{stdout}\n{stderr}");
    }
}

#[test]
fn every_example_inventory_has_the_groups_the_playbooks_name() {
    for inv in INVENTORIES {
        let (code, stdout, stderr) = lifeboat(&["inventory", "-i", inv, "--list"]);
        assert_eq!(code, 0, "{inv}: {stderr}");
        let v: serde_json::Value =
            serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{inv}: {e}\n{stdout}"));
        for group in ["control", "compute", "backup"] {
            let hosts = v[group]["hosts"].as_array().map_or(0, Vec::len);
            assert!(hosts > 0, "{inv}: group {group} has no hosts:\n{stdout}");
        }
    }
}

#[test]
fn the_backup_graph_reaches_every_host_of_each_example_inventory() {
    for inv in INVENTORIES {
        let (code, stdout, stderr) =
            lifeboat(&["graph", "playbooks/openstack/backup.yml", "-i", inv]);
        assert_eq!(code, 0, "{inv}: {stderr}");
        let (_, list, _) = lifeboat(&["inventory", "-i", inv, "--list"]);
        let v: serde_json::Value = serde_json::from_str(&list).unwrap_or_default();
        for group in ["control", "compute"] {
            for h in v[group]["hosts"].as_array().into_iter().flatten() {
                let h = h.as_str().unwrap_or_default();
                assert!(
                    stdout.contains(&format!("@ {h}")),
                    "{inv}: backup.yml has no node on {h}:\n{stdout}"
                );
            }
        }
    }
}
