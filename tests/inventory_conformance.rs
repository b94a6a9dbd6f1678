//! Inventory conformance with ansible-core: on real inventories copied byte for byte
//! from public projects (`tests/fixtures/inventory/conformance/`, each folder's
//! `case.yml` naming its project, repository and commit), and on a few written here to
//! pin the typing rules (`tests/fixtures/inventory/typing/`), lifeboat must read what
//! Ansible reads:
//!
//! - `lifeboat inventory --list` and `--list --export` equal `ansible-inventory --list`
//!   and `--list --export` (groups, their hosts and children in order, every host's
//!   variables with their JSON types);
//! - `lifeboat inventory --graph` equals `ansible-inventory --graph`, byte for byte;
//! - every group's hosts, in order, equal Ansible's `groups` variable;
//! - for each pattern of the case, `lifeboat inventory --list-hosts PATTERN` lists what
//!   `ansible PATTERN --list-hosts` lists, in order.
//!
//! Ansible walks the levels below a group's children through a Python `set` of groups
//! (hashed by memory address), so where two groups of one such level both have
//! children, its order is an accident of the run. Such groups (found from the group
//! tree Ansible prints) are compared as sets, and the test says which; the patterns
//! of the corpus are chosen not to depend on them and are all compared in order. The
//! Ansible is the one pinned in `tests/requirements.txt`,
//! installed by `scripts/test` into `$LIFEBOAT_TEST_VENV` (default
//! `/var/tmp/lifeboat-test-venv`).

use std::collections::{BTreeSet, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

use serde_json::Value as Json;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The pinned ansible-core version from tests/requirements.txt.
fn pinned_version() -> String {
    let text = std::fs::read_to_string(root().join("tests/requirements.txt"))
        .expect("tests/requirements.txt");
    text.lines()
        .find_map(|l| l.trim().strip_prefix("ansible-core=="))
        .expect("ansible-core pinned in tests/requirements.txt")
        .trim()
        .to_string()
}

/// The virtualenv with the pinned Ansible; fails (never skips) when it is missing.
fn venv() -> PathBuf {
    let venv = std::env::var_os("LIFEBOAT_TEST_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/tmp/lifeboat-test-venv"));
    let want = pinned_version();
    let out = Command::new(venv.join("bin/ansible"))
        .arg("--version")
        .env("PYTHONWARNINGS", "ignore")
        .output();
    let first = out
        .as_ref()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .next()
                .unwrap_or("")
                .to_string()
        })
        .unwrap_or_default();
    assert!(
        first.contains(&format!("[core {want}]")),
        "ansible-core {want} is not installed in {} (found: {first:?}, {:?}); \
         run scripts/test, which installs tests/requirements.txt there",
        venv.display(),
        out.err()
    );
    venv
}

struct Case {
    name: String,
    dir: PathBuf,
    inventory: String,
    patterns: Vec<String>,
}

fn cases(folder: &str) -> Vec<Case> {
    let base = root().join(folder);
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(&base)
        .unwrap_or_else(|e| panic!("{}: {e}", base.display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.join("case.yml").is_file())
        .collect();
    dirs.sort();
    dirs.into_iter()
        .map(|dir| {
            let text = std::fs::read_to_string(dir.join("case.yml")).expect("case.yml");
            let v: Json = serde_saphyr::from_str(&text)
                .unwrap_or_else(|e| panic!("{}/case.yml: {e}", dir.display()));
            let inventory = v["inventory"]
                .as_str()
                .unwrap_or_else(|| panic!("{}/case.yml: no `inventory`", dir.display()))
                .to_string();
            let patterns = v["patterns"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|p| p.as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default();
            Case {
                name: dir
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default(),
                dir,
                inventory,
                patterns,
            }
        })
        .collect()
}

/// Runs an Ansible tool of the venv in `dir` (one fixed Python hash seed).
fn ansible(venv: &Path, home: &Path, tool: &str, dir: &Path, args: &[&str]) -> String {
    let out = Command::new(venv.join("bin").join(tool))
        .args(args)
        .current_dir(dir)
        .env("PYTHONHASHSEED", "0")
        .env("PYTHONWARNINGS", "ignore")
        .env("ANSIBLE_HOME", home)
        .env("ANSIBLE_LOCAL_TEMP", home.join("tmp"))
        .env("ANSIBLE_CONFIG", home.join("ansible.cfg"))
        .env("ANSIBLE_NOCOLOR", "1")
        .env("ANSIBLE_DEPRECATION_WARNINGS", "False")
        .env("ANSIBLE_HOST_PATTERN_MISMATCH", "error")
        .env("ANSIBLE_INVENTORY_UNPARSED_FAILED", "True")
        .output()
        .unwrap_or_else(|e| panic!("{tool}: {e}"));
    assert!(
        out.status.success(),
        "{tool} {args:?} in {} failed: {}",
        dir.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn lifeboat(dir: &Path, args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_lifeboat"))
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run lifeboat");
    if !out.status.success() {
        return format!("FAILED: {}", String::from_utf8_lossy(&out.stderr));
    }
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn json(text: &str, what: &str) -> Json {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("{what} printed no JSON ({e}): {text}"))
}

/// Hosts listed by `ansible PATTERN --list-hosts` (`  hosts (N):` then one a line).
fn listed_hosts(text: &str) -> Vec<String> {
    text.lines()
        .skip_while(|l| !l.trim_start().starts_with("hosts ("))
        .skip(1)
        .map(|l| l.trim().to_string())
        .filter(|l| !l.is_empty())
        .collect()
}

/// The `groups` variable as Ansible sees it (a `debug` on the implicit localhost).
fn ansible_groups(venv: &Path, home: &Path, case: &Case) -> serde_json::Map<String, Json> {
    let out = ansible(
        venv,
        home,
        "ansible",
        &case.dir,
        &[
            "localhost",
            "-i",
            &case.inventory,
            "-m",
            "debug",
            "-a",
            "var=groups",
        ],
    );
    let body = out
        .split_once("=> ")
        .map(|(_, b)| b)
        .unwrap_or_else(|| panic!("no result from debug: {out}"));
    match json(body, "ansible debug")["groups"].take() {
        Json::Object(m) => m,
        other => panic!("groups is {other}"),
    }
}

/// The comparison of one case: what was compared, and every difference found.
#[derive(Default)]
struct Outcome {
    groups: usize,
    groups_as_sets: Vec<String>,
    patterns: usize,
    differences: Vec<String>,
}

fn strings(v: &Json) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

fn compare(venv: &Path, home: &Path, case: &Case) -> Outcome {
    let mut o = Outcome::default();
    let inv = case.inventory.as_str();
    let mut diff = |what: String| o.differences.push(format!("{}: {what}", case.name));

    // --list and --list --export: whole documents.
    let mut tree = Json::Null;
    for export in [false, true] {
        let mut args = vec!["-i", inv, "--list"];
        if export {
            args.push("--export");
        }
        let mut theirs = json(
            &ansible(venv, home, "ansible-inventory", &case.dir, &args),
            "ansible-inventory",
        );
        if let Some(meta) = theirs.get_mut("_meta").and_then(Json::as_object_mut) {
            meta.remove("profile");
        }
        if !export {
            tree = theirs.clone();
        }
        let mut cli = vec!["inventory"];
        cli.extend(&args);
        let ours_text = lifeboat(&case.dir, &cli);
        let ours: Json = serde_json::from_str(&ours_text).unwrap_or(Json::String(ours_text));
        if ours != theirs {
            diff(format!(
                "`inventory {}` differs from ansible-inventory's:\n{}",
                args.join(" "),
                json_diff(&theirs, &ours, "")
            ));
        }
    }

    // --graph: text.
    let theirs = ansible(
        venv,
        home,
        "ansible-inventory",
        &case.dir,
        &["-i", inv, "--graph"],
    );
    let ours = lifeboat(&case.dir, &["inventory", "-i", inv, "--graph"]);
    if ours.trim_end() != theirs.trim_end() {
        diff(format!(
            "--graph differs:\n--- ansible\n{theirs}\n--- lifeboat\n{ours}"
        ));
    }

    // Every group's hosts, in order unless Ansible's own order is an accident.
    let children: HashMap<String, Vec<String>> = tree
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(g, v)| (g.clone(), strings(&v["children"])))
                .collect()
        })
        .unwrap_or_default();
    let theirs_all = ansible_groups(venv, home, case);
    let ours_text = lifeboat(&case.dir, &["inventory", "-i", inv, "--groups"]);
    let ours = match serde_json::from_str::<Json>(&ours_text) {
        Ok(Json::Object(m)) => m,
        _ => {
            diff(format!("lifeboat --groups failed: {ours_text}"));
            return o;
        }
    };
    for (group, hosts) in &theirs_all {
        o.groups += 1;
        let theirs = strings(hosts);
        let mine = ours.get(group).map(strings).unwrap_or_default();
        if order_is_an_accident(group, &children) {
            o.groups_as_sets.push(format!("{}/{group}", case.name));
            if as_set(&mine) != as_set(&theirs) {
                diff(format!(
                    "group `{group}` (as a set): Ansible {theirs:?}, lifeboat {mine:?}"
                ));
            }
        } else if mine != theirs {
            diff(format!(
                "group `{group}`: Ansible {theirs:?}, lifeboat {mine:?}"
            ));
        }
    }
    if ours.len() != theirs_all.len() {
        let extra: Vec<_> = ours
            .keys()
            .filter(|g| !theirs_all.contains_key(*g))
            .collect();
        diff(format!("groups only lifeboat has: {extra:?}"));
    }

    // Patterns: what `ansible PATTERN --list-hosts` lists, in order.
    for pattern in &case.patterns {
        o.patterns += 1;
        let theirs = listed_hosts(&ansible(
            venv,
            home,
            "ansible",
            &case.dir,
            &["-i", inv, pattern, "--list-hosts"],
        ));
        assert!(
            !theirs.is_empty(),
            "{}: pattern `{pattern}` selects no host in Ansible: pick one that does",
            case.name
        );
        let mine: Vec<String> = lifeboat(
            &case.dir,
            &["inventory", "-i", inv, "--list-hosts", pattern],
        )
        .lines()
        .map(str::to_string)
        .collect();
        if mine != theirs {
            diff(format!(
                "pattern `{pattern}`: Ansible {theirs:?}, lifeboat {mine:?}"
            ));
        }
    }
    o
}

/// True when Ansible's order of `group`'s hosts depends on the iteration order of a
/// Python set: its `Group._walk_relationship` takes each level below the children from
/// a set, and two groups of one level that both bring new groups are taken in an
/// order nothing fixes.
fn order_is_an_accident(group: &str, children: &HashMap<String, Vec<String>>) -> bool {
    let kids = |g: &str| children.get(g).cloned().unwrap_or_default();
    let mut seen: HashSet<String> = kids(group).into_iter().collect();
    seen.insert(group.to_string());
    let mut level: HashSet<String> = seen.clone();
    while !level.is_empty() {
        let bringing = level
            .iter()
            .filter(|g| kids(g).iter().any(|c| !seen.contains(c)))
            .count();
        if bringing > 1 {
            return true;
        }
        let next: HashSet<String> = level
            .iter()
            .flat_map(|g| kids(g))
            .filter(|c| !seen.contains(c))
            .collect();
        seen.extend(next.iter().cloned());
        level = next;
    }
    false
}

fn as_set(v: &[String]) -> BTreeSet<&str> {
    v.iter().map(String::as_str).collect()
}

/// Where two JSON documents differ, one line per place (`path: ansible vs lifeboat`).
fn json_diff(theirs: &Json, ours: &Json, path: &str) -> String {
    match (theirs, ours) {
        (Json::Object(a), Json::Object(b)) => {
            let keys: BTreeSet<&String> = a.keys().chain(b.keys()).collect();
            keys.into_iter()
                .filter_map(|k| {
                    let p = format!("{path}/{k}");
                    match (a.get(k), b.get(k)) {
                        (Some(x), Some(y)) if x == y => None,
                        (Some(x), Some(y)) => Some(json_diff(x, y, &p)),
                        (Some(x), None) => Some(format!("  {p}: ansible {x}, lifeboat has none\n")),
                        (None, Some(y)) => Some(format!("  {p}: lifeboat {y}, ansible has none\n")),
                        (None, None) => None,
                    }
                })
                .collect()
        }
        _ => format!("  {path}: ansible {theirs}, lifeboat {ours}\n"),
    }
}

fn run_all(folder: &str, min_cases: usize) -> (usize, Outcome) {
    let venv = venv();
    let home = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir_all(home.path().join("tmp")).expect("mkdir");
    std::fs::write(home.path().join("ansible.cfg"), "").expect("ansible.cfg");
    let cases = cases(folder);
    assert!(
        cases.len() >= min_cases,
        "{folder} holds {} cases, fewer than {min_cases}",
        cases.len()
    );
    // Two at a time: each Ansible run is a Python process of most of a second.
    let next = Mutex::new(0usize);
    let results = Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for _ in 0..2 {
            s.spawn(|| {
                loop {
                    let i = {
                        let mut n = next.lock().unwrap_or_else(|e| e.into_inner());
                        *n += 1;
                        *n - 1
                    };
                    let Some(case) = cases.get(i) else { break };
                    let o = compare(&venv, home.path(), case);
                    results.lock().unwrap_or_else(|e| e.into_inner()).push(o);
                }
            });
        }
    });
    let mut total = Outcome::default();
    for o in results.into_inner().unwrap_or_else(|e| e.into_inner()) {
        total.groups += o.groups;
        total.patterns += o.patterns;
        total.groups_as_sets.extend(o.groups_as_sets);
        total.differences.extend(o.differences);
    }
    (cases.len(), total)
}

fn report(folder: &str, n: usize, o: &Outcome) {
    let failed_cases: BTreeSet<&str> = o
        .differences
        .iter()
        .filter_map(|d| d.split(':').next())
        .collect();
    println!(
        "{folder} vs ansible-core {}: {}/{n} inventories identical (--list, --list --export, \
         --graph, groups); {} groups compared ({} as sets), {} patterns compared, in order",
        pinned_version(),
        n - failed_cases.len(),
        o.groups,
        o.groups_as_sets.len(),
        o.patterns,
    );
    if !o.groups_as_sets.is_empty() {
        println!(
            "compared as sets, because Ansible's own order is an accident of the run there \
             (it walks groups below the children through a Python set): {:?}",
            o.groups_as_sets
        );
    }
    assert!(
        o.differences.is_empty(),
        "{} difference(s):\n{}",
        o.differences.len(),
        o.differences.join("\n")
    );
}

#[test]
fn real_inventories_mean_what_they_mean_to_ansible() {
    let folder = "tests/fixtures/inventory/conformance";
    let (n, o) = run_all(folder, 12);
    report(folder, n, &o);
}

#[test]
fn typing_rules_match_ansible_value_for_value() {
    let folder = "tests/fixtures/inventory/typing";
    let (n, o) = run_all(folder, 2);
    report(folder, n, &o);
}
