//! Integration tests of `lifeboat::inventory` against fixture files under
//! `tests/fixtures/inventory/` and generated dynamic-inventory scripts.

use std::path::{Path, PathBuf};

use lifeboat::error::InputErrors;
use lifeboat::inventory::{ConnectionKind, Inventory};
use serde_json::json;

fn fixture(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/inventory")
        .join(rel)
}

fn load(rel: &str) -> Inventory {
    Inventory::load(Some(&fixture(rel))).unwrap_or_else(|e| panic!("{e}"))
}

fn load_err(rel: &str) -> InputErrors {
    match Inventory::load(Some(&fixture(rel))) {
        Ok(_) => panic!("{rel} should not load"),
        Err(e) => e,
    }
}

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

// ---- YAML with group_vars / host_vars ------------------------------------------------

#[test]
fn yaml_inventory_hosts_groups_and_order() {
    let inv = load("yaml/hosts.yml");
    assert_eq!(inv.hosts(), strings(&["bastion", "web1", "web2", "db1"]));
    let groups = inv.groups();
    assert_eq!(groups["all"], strings(&["bastion", "web1", "web2", "db1"]));
    assert_eq!(groups["ungrouped"], strings(&["bastion"]));
    assert_eq!(groups["openstack"], strings(&["web1", "web2", "db1"]));
    // A group's own hosts first, in the order listed (ansible-core 2.19 says the same).
    assert_eq!(groups["db"], strings(&["db1", "web2"]));
    assert_eq!(
        inv.group_names("web2"),
        strings(&["db", "openstack", "web"])
    );
}

#[test]
fn yaml_precedence_child_over_parent_files_over_inline_host_vars_last() {
    let inv = load("yaml/hosts.yml");
    let web1 = inv.host_vars("web1");
    // all inline < group_vars/all < openstack inline < group_vars/web (deeper group).
    assert_eq!(web1["tier"], json!("web-file"));
    // group_vars/web 80 < host inline 8080 < host_vars/web1 9090.
    assert_eq!(web1["http_port"], json!(9090));
    // group_vars/openstack.yaml overrides the inventory's own openstack vars.
    assert_eq!(web1["region"], json!("RegionTwo"));
    assert_eq!(web1["ntp"], json!("pool.ntp.org"));
    assert_eq!(web1["backup_root"], json!("/srv/backup"));
    assert_eq!(web1["inventory_hostname"], json!("web1"));

    // web2 is in db and web (same depth): alphabetical, the later (web) wins.
    let web2 = inv.host_vars("web2");
    assert_eq!(web2["tier"], json!("web-file"));
    assert_eq!(web2["ansible_user"], json!("www"));
    assert_eq!(web2["http_port"], json!(80));
    // group_vars/db/ is a directory: files merged in name order.
    assert_eq!(web2["engine"], json!("mariadb"));
    assert_eq!(web2["db_role"], json!("replica"));

    let db1 = inv.host_vars("db1");
    assert_eq!(db1["tier"], json!("db-file"));
    assert_eq!(db1["ansible_user"], json!("postgres"));

    // Only in `all` (and ungrouped): the all file beats the all inline vars.
    assert_eq!(inv.host_vars("bastion")["tier"], json!("all-file"));
}

#[test]
fn yaml_connection_settings() {
    let inv = load("yaml/hosts.yml");
    let c = inv.connection("web1");
    assert_eq!(c.kind, ConnectionKind::Ssh);
    assert_eq!(c.address, "10.0.1.1");
    assert_eq!(c.user.as_deref(), Some("www"));
    assert!(c.become_, "host_vars sets ansible_become: \"yes\"");
    let c = inv.connection("db1");
    assert_eq!((c.address.as_str(), c.port), ("db1", Some(2200)));
    assert!(!c.become_);
}

#[test]
fn implicit_localhost_gets_all_vars_and_its_host_vars_file() {
    let inv = load("yaml/hosts.yml");
    assert_eq!(inv.select("localhost"), Ok(strings(&["localhost"])));
    assert!(!inv.hosts().contains(&"localhost".to_string()));
    let v = inv.host_vars("localhost");
    assert_eq!(v["local_only"], json!(true));
    assert_eq!(v["tier"], json!("all-file"));
    assert_eq!(inv.connection("localhost").kind, ConnectionKind::Local);
}

// ---- INI ----------------------------------------------------------------------------

#[test]
fn ini_inventory_without_extension() {
    let inv = load("ini/hosts");
    assert_eq!(
        inv.hosts(),
        strings(&[
            "lonely.example.com",
            "web01.example.com",
            "web02.example.com",
            "web03.example.com",
            "web04.example.com",
            "db-a",
            "db-b",
            "db-c",
        ])
    );
    assert_eq!(inv.groups()["ungrouped"], strings(&["lonely.example.com"]));
    let w = inv.host_vars("web02.example.com");
    assert_eq!(
        w["http_port"],
        json!(8080),
        "host var (a number) beats [app:vars]"
    );
    assert_eq!(w["ansible_user"], json!("deploy user"));
    assert_eq!(w["greeting"], json!("hello world"));
    let w4 = inv.host_vars("web04.example.com");
    assert_eq!(
        w4["http_port"],
        json!(80),
        "[group:vars] values are Python literals too (ansible-core 2.19)"
    );
    assert_eq!(w4["enabled"], json!(true));
    assert_eq!(w4["weight"], json!(0.5));
    let c = inv.connection("web04.example.com");
    assert_eq!(c.port, Some(2222));
    assert!(!c.become_, "ansible_become=false from [app:vars]");
    let c = inv.connection("db-a");
    assert!(c.become_, "ansible_become=yes on the host line");
    assert_eq!(c.address, "10.0.2.1");
    assert_eq!(inv.connection("db-c").address, "10.0.2.9");
}

// ---- kolla-ansible multinode --------------------------------------------------------

#[test]
fn kolla_multinode_loads_unchanged() {
    let inv = load("kolla/multinode");
    let control = strings(&["control01", "control02", "control03"]);
    assert_eq!(inv.select("nova-api"), Ok(control.clone()));
    assert_eq!(inv.select("nova"), Ok(control.clone()));
    assert_eq!(inv.select("mariadb"), Ok(control.clone()));
    assert_eq!(
        inv.select("compute"),
        Ok(strings(&[
            "compute01",
            "compute02",
            "compute03",
            "compute04"
        ]))
    );
    assert_eq!(inv.select("storage"), Ok(strings(&["storage01"])));
    assert_eq!(inv.select("cinder-volume"), Ok(strings(&["storage01"])));
    assert_eq!(
        inv.select("neutron-l3-agent"),
        Ok(strings(&["network01", "network02"]))
    );
    // openvswitch: network + compute + manila-share (itself network), no duplicates.
    assert_eq!(
        inv.select("openvswitch").map(|h| h.len()),
        Ok(6),
        "{:?}",
        inv.select("openvswitch")
    );
    assert_eq!(inv.select("deployment"), Ok(strings(&["localhost"])));
    assert_eq!(inv.select("baremetal").map(|h| h.len()), Ok(11));
    assert_eq!(inv.hosts().len(), 12);
    assert_eq!(
        inv.select("nova-api:&control01"),
        Ok(strings(&["control01"]))
    );

    let c = inv.connection("control02");
    assert_eq!(c.kind, ConnectionKind::Ssh);
    assert_eq!(c.address, "10.0.0.12");
    assert_eq!(c.user.as_deref(), Some("kolla"));
    assert!(c.become_);
    let c = inv.connection("compute03");
    assert_eq!(c.address, "compute03");
    assert_eq!(c.key_file.as_deref(), Some("/etc/kolla/id_rsa"));
    let c = inv.connection("storage01");
    assert_eq!(c.port, Some(2222));
    assert_eq!(inv.connection("localhost").kind, ConnectionKind::Local);
    let v = inv.host_vars("compute01");
    assert_eq!(v["kolla_internal_vip_address"], json!("10.0.0.250"));
    assert_eq!(v["ansible_python_interpreter"], json!("/usr/bin/python3"));
    assert!(
        inv.group_names("control01")
            .contains(&"nova-api".to_string())
    );
    let g = inv.graph_text();
    assert!(
        g.contains(
            "  |--@nova-api:\n  |  |--@nova:\n  |  |  |--@control:\n  |  |  |  |--control01\n"
        ),
        "{g}"
    );
}

// ---- directory inventory ------------------------------------------------------------

#[test]
fn directory_inventory_reads_every_file_and_its_group_vars() {
    let inv = load("dir");
    assert_eq!(
        inv.hosts(),
        strings(&["web1", "web2", "web3", "db1", "db2"])
    );
    assert_eq!(inv.select("web"), Ok(strings(&["web1", "web2", "web3"])));
    assert_eq!(inv.select("db"), Ok(strings(&["db1", "db2"])));
    assert_eq!(inv.host_vars("web3")["role"], json!("frontend"));
}

// ---- dynamic inventory --------------------------------------------------------------

fn script(dir: &Path, name: &str, body: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join(name);
    std::fs::write(&path, body).expect("write script");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    path
}

#[test]
fn dynamic_inventory_with_meta() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = script(
        dir.path(),
        "openstack_inventory",
        r#"#!/bin/sh
if [ "$1" != "--list" ]; then echo "unexpected $*" >&2; exit 3; fi
cat <<'EOF'
{
  "control": {"hosts": ["ctl1", "ctl2"], "vars": {"ansible_user": "kolla"}},
  "compute": ["cmp1"],
  "openstack": {"children": ["control", "compute"], "vars": {"region": "R1"}},
  "_meta": {"hostvars": {"ctl1": {"ansible_host": "10.0.0.1", "ansible_port": 2222}}}
}
EOF
"#,
    );
    std::fs::create_dir(dir.path().join("group_vars")).expect("mkdir");
    std::fs::write(
        dir.path().join("group_vars/compute.yml"),
        "ansible_user: root\n",
    )
    .expect("write");
    let inv = Inventory::load(Some(&path)).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(inv.hosts(), strings(&["ctl1", "ctl2", "cmp1"]));
    assert_eq!(
        inv.select("openstack"),
        Ok(strings(&["ctl1", "ctl2", "cmp1"]))
    );
    let c = inv.connection("ctl1");
    assert_eq!((c.address.as_str(), c.port), ("10.0.0.1", Some(2222)));
    assert_eq!(c.user.as_deref(), Some("kolla"));
    assert_eq!(inv.connection("cmp1").user.as_deref(), Some("root"));
    assert_eq!(inv.host_vars("cmp1")["region"], json!("R1"));
}

#[test]
fn dynamic_inventory_without_meta_asks_each_host() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = script(
        dir.path(),
        "inv.sh",
        r#"#!/bin/sh
case "$1" in
  --list) cat <<'EOF'
{"web": {"hosts": ["w1", "w2"]}}
EOF
  ;;
  --host) printf '{"who": "%s"}\n' "$2" ;;
  *) exit 2 ;;
esac
"#,
    );
    let inv = Inventory::load(Some(&path)).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(inv.host_vars("w2")["who"], json!("w2"));
    assert_eq!(inv.host_vars("w1")["who"], json!("w1"));
}

#[test]
fn dynamic_inventory_failures_name_the_script_and_show_stderr() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = script(
        dir.path(),
        "broken.sh",
        "#!/bin/sh\necho 'cannot reach keystone' >&2\nexit 4\n",
    );
    let e = Inventory::load(Some(&path))
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(e.contains("broken.sh --list` exited with status 4"), "{e}");
    assert!(e.contains("cannot reach keystone"), "{e}");

    let path = script(
        dir.path(),
        "garbage.sh",
        "#!/bin/sh\necho '{\"web\": {\"hosts\": [\"a\",]}}'\n",
    );
    let e = Inventory::load(Some(&path))
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(
        e.contains("garbage.sh --list` did not print valid JSON"),
        "{e}"
    );
    assert!(e.contains("garbage.sh --list (output):1:"), "{e}");
}

#[test]
fn a_script_named_without_a_path_is_the_file_here_not_a_command_in_path() {
    let dir = tempfile::tempdir().expect("tempdir");
    script(
        dir.path(),
        "inventory.sh",
        "#!/bin/sh\necho '{\"web\": {\"hosts\": [\"w1\"]}, \"_meta\": {\"hostvars\": {}}}'\n",
    );
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_lifeboat"))
        .args(["inventory", "-i", "inventory.sh", "--list-hosts", "web"])
        .current_dir(dir.path())
        .output()
        .expect("run lifeboat");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "w1\n",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success());
}

#[test]
fn a_script_that_cannot_run_says_why() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = script(
        dir.path(),
        "inv.py",
        "#!/usr/bin/no-such-interpreter\nprint('{}')\n",
    );
    let e = Inventory::load(Some(&path))
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(e.contains("cannot run inventory script"), "{e}");
    assert!(
        e.contains("its `#!` line names an interpreter that is not installed"),
        "{e}"
    );
}

// ---- patterns -----------------------------------------------------------------------

#[test]
fn every_pattern_form() {
    let inv = load("kolla/multinode");
    let sel = |p: &str| inv.select(p).unwrap_or_else(|e| panic!("{p}: {e}"));
    assert_eq!(sel("all").len(), 12);
    assert_eq!(sel("*"), sel("all"));
    assert_eq!(sel("control01"), strings(&["control01"]));
    assert_eq!(sel("control:network").len(), 5);
    assert_eq!(sel("control,network"), sel("control:network"));
    // Results keep the pattern's order, as in Ansible.
    assert_eq!(sel("network:control")[0], "network01");
    assert_eq!(sel("baremetal[-1]"), strings(&["monitoring01"]));
    assert_eq!(sel("baremetal:&nova"), sel("control"));
    assert_eq!(
        sel("baremetal:!control:!compute"),
        strings(&["network01", "network02", "storage01", "monitoring01"])
    );
    assert_eq!(sel("compute[0]"), strings(&["compute01"]));
    assert_eq!(sel("compute[-1]"), strings(&["compute04"]));
    assert_eq!(
        sel("compute[1:3]"),
        strings(&["compute02", "compute03", "compute04"]),
        "the end of a subscript range is inclusive, as in Ansible"
    );
    assert_eq!(sel("control0*"), sel("control"));
    assert_eq!(
        sel("*01"),
        strings(&[
            "control01",
            "network01",
            "compute01",
            "monitoring01",
            "storage01"
        ])
    );
    assert_eq!(sel("nova-*:!nova-compute"), sel("control"));
}

#[test]
fn pattern_errors_name_the_unknown_part() {
    let inv = load("kolla/multinode");
    assert_eq!(
        inv.select("contrl"),
        Err(
            "host pattern `contrl`: no host or group named `contrl` (did you mean `control`?)"
                .to_string()
        )
    );
    let e = inv.select("compute:xyzzy").err().unwrap_or_default();
    assert!(
        e.contains("(part `xyzzy`): no host or group named `xyzzy`; known groups: control,"),
        "{e}"
    );
    let e = inv.select("ceph*").err().unwrap_or_default();
    assert!(e.contains("`ceph*` matches no host or group"), "{e}");
    let e = inv.select("compute[9]").err().unwrap_or_default();
    assert!(
        e.contains("`compute` has 4 host(s); subscript [9] is out of range"),
        "{e}"
    );
}

// ---- errors -------------------------------------------------------------------------

fn rendered(e: &InputErrors) -> String {
    e.to_string()
}

#[test]
fn yaml_host_vars_list_is_a_located_error() {
    let e = rendered(&load_err("errors/bad_host_vars.yml"));
    assert!(
        e.contains("variables of host `web1` must be a mapping, found a list"),
        "{e}"
    );
    assert!(e.contains("bad_host_vars.yml:6:11"), "{e}");
    assert!(e.contains("6 |           - http_port: 80"), "{e}");
}

#[test]
fn yaml_children_list_is_a_located_error() {
    let e = rendered(&load_err("errors/bad_children.yml"));
    assert!(
        e.contains("`children` of group `all` must be a mapping of group names, found a list"),
        "{e}"
    );
    assert!(e.contains("bad_children.yml:3:5"), "{e}");
}

#[test]
fn ini_errors_are_all_reported_and_located() {
    let errors = load_err("errors/bad.ini");
    assert_eq!(errors.0.len(), 4, "{errors}");
    let e = rendered(&errors);
    assert!(e.contains("unclosed quote \" in this line"), "{e}");
    assert!(e.contains("bad.ini:2:19"), "{e}");
    assert!(
        e.contains("expected `key=value` after host `web2`, found `http_port`"),
        "{e}"
    );
    assert!(e.contains("bad.ini:3:6"), "{e}");
    assert!(e.contains("section header `[db` is not closed"), "{e}");
    assert!(e.contains("bad.ini:5:1"), "{e}");
}

#[test]
fn group_cycle_is_a_located_error() {
    let e = rendered(&load_err("errors/cycle.ini"));
    assert!(
        e.contains("group `a` is its own ancestor: a -> b -> c -> a"),
        "{e}"
    );
    assert!(e.contains("cycle.ini:11:1"), "{e}");
}

#[test]
fn group_vars_file_that_is_not_a_mapping_is_a_located_error() {
    let e = rendered(&load_err("errors/vars_bad/hosts.yml"));
    assert!(
        e.contains("a variables file must be a mapping of names to values, found a list"),
        "{e}"
    );
    assert!(e.contains("group_vars/all.yml:1:1"), "{e}");
}

#[test]
fn malformed_inventories_return_errors_not_panics() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cases = [
        ("a.yml", "all:\n  hosts: 3\n"),
        ("b.yml", "all: [\n"),
        ("c.ini", "[a:children]\na\n"),
        ("d.ini", "web[1:x]\n"),
        ("e.ini", "[web]\nh 'unclosed\n"),
        ("f.json", "{\"all\": {\"hosts\": {\"h\": 5}}}"),
        ("g.ini", "[a:vars]\nnoequals\n"),
    ];
    for (name, text) in cases {
        let path = dir.path().join(name);
        std::fs::write(&path, text).expect("write");
        let result = Inventory::load(Some(&path));
        assert!(result.is_err(), "{name} should be an error");
    }
}

#[test]
fn list_json_and_graph() {
    let inv = load("ini/hosts");
    let j = inv.to_ansible_json(true);
    assert_eq!(j["app"]["children"], json!(["web", "db"]));
    assert_eq!(j["db"]["hosts"], json!(["db-a", "db-b", "db-c"]));
    assert_eq!(j["app"]["vars"]["greeting"], json!("hello world"));
    assert_eq!(
        j["_meta"]["hostvars"]["web04.example.com"]["ansible_port"],
        json!(2222)
    );
    assert_eq!(j["all"]["children"], json!(["ungrouped", "app"]));
    // `ansible-inventory -i ini/hosts --graph` of ansible-core 2.19, byte for byte.
    assert_eq!(
        inv.graph_text(),
        "@all:\n  |--@ungrouped:\n  |  |--lonely.example.com\n  |--@app:\n  |  |--@web:\n  |  |  |--web01.example.com\n  |  |  |--web02.example.com\n  |  |  |--web03.example.com\n  |  |  |--web04.example.com\n  |  |--@db:\n  |  |  |--db-a\n  |  |  |--db-b\n  |  |  |--db-c\n"
    );
}
