//! Unit tests of the inventory type: precedence, queries, outputs, connections.

use serde_json::json;

use super::*;

fn ini(text: &str) -> Inventory {
    Inventory::from_ini(&SourceFile::new("h.ini", text)).unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn deeper_groups_win_and_same_depth_is_alphabetical() {
    let i = ini(
        "[all:vars]\nv=all\nonly_all=1\n[b]\nh1\n[a]\nh1\n[b:vars]\nv=b\n[a:vars]\nv=a\n[p:children]\nb\n[p:vars]\nv=p\nw=p\n[c]\nh1 v=host\n",
    );
    // b (depth 2, under p) beats a and c (depth 1) and p (depth 1).
    let v = i.host_vars("h1");
    assert_eq!(v["v"], json!("host"));
    let i = ini(
        "[all:vars]\nv=all\n[b]\nh1\n[a]\nh1\n[b:vars]\nv=b\n[a:vars]\nv=a\n[p:children]\na\n[p:vars]\nv=p\nw=p\n",
    );
    let v = i.host_vars("h1");
    assert_eq!(
        v["v"],
        json!("a"),
        "child a (depth 2) beats b and p (depth 1)"
    );
    assert_eq!(v["w"], json!("p"));
    let i = ini("[b]\nh1\n[a]\nh1\n[b:vars]\nv=b\n[a:vars]\nv=a\n");
    assert_eq!(
        i.host_vars("h1")["v"],
        json!("b"),
        "same depth: alphabetical, later wins"
    );
    assert_eq!(i.host_vars("h1")["inventory_hostname"], json!("h1"));
}

#[test]
fn group_priority_reorders_same_depth() {
    // Ansible's default priority is 1; a higher one merges later, so it wins.
    let i = ini("[b]\nh1\n[a]\nh1\n[b:vars]\nv=b\n[a:vars]\nv=a\nansible_group_priority=2\n");
    assert_eq!(i.host_vars("h1")["v"], json!("a"));
    assert!(!i.host_vars("h1").contains_key("ansible_group_priority"));
    let i = ini("[b]\nh1\n[a]\nh1\n[b:vars]\nv=b\n[a:vars]\nv=a\nansible_group_priority=1\n");
    assert_eq!(i.host_vars("h1")["v"], json!("b"));
}

#[test]
fn groups_and_group_names() {
    let i = ini("lonely\n[web]\nw1\n[db]\nd1\n[app:children]\nweb\ndb\n");
    let g = i.groups();
    assert_eq!(g["all"], vec!["lonely", "w1", "d1"]);
    assert_eq!(g["ungrouped"], vec!["lonely"]);
    assert_eq!(g["app"], vec!["w1", "d1"]);
    assert_eq!(i.group_names("w1"), vec!["app", "web"]);
    assert_eq!(i.group_names("lonely"), vec!["ungrouped"]);
}

#[test]
fn connection_settings_read_ansible_names_and_ini_strings() {
    let i = ini(
        "[web]\nw1 ansible_host=10.0.0.5 ansible_port=\"2222\" ansible_user=kolla ansible_become=yes ansible_become_pass=s3cret ansible_ssh_private_key_file=/k\nw2 connection=smart port=22 become=True user=u\nlocalhost\n[other]\nlocalhost2 ansible_connection=local\n[web:vars]\nansible_ssh_common_args=\"-o ProxyJump=bastion\"\n",
    );
    let c = i.connection("w1");
    assert_eq!(c.kind, ConnectionKind::Ssh);
    assert_eq!(c.address, "10.0.0.5");
    assert_eq!(c.port, Some(2222));
    assert_eq!(c.user.as_deref(), Some("kolla"));
    assert!(c.become_);
    assert_eq!(c.become_password.as_deref(), Some("s3cret"));
    assert_eq!(c.key_file.as_deref(), Some("/k"));
    assert_eq!(c.ssh_common_args.as_deref(), Some("-o ProxyJump=bastion"));
    assert_eq!(
        c.become_settings().map(|b| b.password),
        Some(Some("s3cret".to_string()))
    );
    let c = i.connection("w2");
    assert_eq!(
        (c.kind, c.port, c.become_),
        (ConnectionKind::Ssh, Some(22), true)
    );
    assert_eq!(c.address, "w2");
    assert_eq!(i.connection("localhost").kind, ConnectionKind::Local);
    assert_eq!(i.connection("localhost2").kind, ConnectionKind::Local);
    let i = ini("localhost ansible_host=10.1.1.1\n");
    assert_eq!(i.connection("localhost").kind, ConnectionKind::Ssh);
}

#[test]
fn truthy_reads_like_ansible() {
    for t in [
        json!(true),
        json!("yes"),
        json!("True"),
        json!("1"),
        json!(1),
        json!("on"),
    ] {
        assert!(truthy(&t), "{t}");
    }
    for f in [
        json!(false),
        json!("no"),
        json!("False"),
        json!("0"),
        json!(0),
        json!(null),
        json!(""),
    ] {
        assert!(!truthy(&f), "{f}");
    }
}

#[test]
fn implicit_inventory_and_implicit_localhost() {
    let i = Inventory::load(None).unwrap_or_default();
    assert_eq!(i.hosts(), vec!["localhost"]);
    assert_eq!(i.select("all"), Ok(vec!["localhost".to_string()]));
    assert_eq!(i.groups()["ungrouped"], vec!["localhost"]);
    assert_eq!(i.connection("localhost").kind, ConnectionKind::Local);
    let i = ini("[all:vars]\nx=1\n[web]\nw1\n");
    assert_eq!(i.select("localhost"), Ok(vec!["localhost".to_string()]));
    assert_eq!(
        i.select("all"),
        Ok(vec!["w1".to_string()]),
        "implicit localhost is not in all"
    );
    assert_eq!(i.connection("localhost").kind, ConnectionKind::Local);
    assert_eq!(i.host_vars("localhost")["x"], json!(1));
}

#[test]
fn graph_matches_ansible_inventory_graph() {
    let i = ini("lonely\n[web]\nw2\nw1\n[app:children]\nweb\n");
    assert_eq!(
        i.graph_text(),
        // ansible-core 2.19's output for this inventory, byte for byte.
        "@all:\n  |--@ungrouped:\n  |  |--lonely\n  |--@app:\n  |  |--@web:\n  |  |  |--w2\n  |  |  |--w1\n"
    );
}

#[test]
fn ansible_json_round_trips_through_the_dynamic_reader() {
    let i = ini("lonely a=1\n[web]\nw1 ansible_host=h\n[web:vars]\np=80\n[app:children]\nweb\n");
    let j = i.to_ansible_json(true);
    assert_eq!(j["web"]["hosts"], json!(["w1"]));
    assert_eq!(j["web"]["vars"], json!({"p": 80}));
    assert_eq!(j["app"]["children"], json!(["web"]));
    assert_eq!(j["ungrouped"]["hosts"], json!(["lonely"]));
    assert_eq!(j["_meta"]["hostvars"]["lonely"], json!({"a": 1}));
    let back = Inventory::from_dynamic_json("x", &j.to_string()).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(back.hosts(), i.hosts());
    assert_eq!(back.groups(), i.groups());
    for h in i.hosts() {
        assert_eq!(back.host_vars(&h), i.host_vars(&h));
    }
}

#[test]
fn format_sniffing() {
    assert!(looks_like_yaml("# c\nall:\n  hosts:\n"));
    assert!(looks_like_yaml("---\n"));
    assert!(!looks_like_yaml("[all]\nhost\n"));
    assert!(!looks_like_yaml("web1:2222\n"));
    assert!(!looks_like_yaml("web1 a=b\n"));
}

#[test]
fn missing_inventory_is_an_error() {
    let e = Inventory::load(Some(Path::new("/nonexistent/inv.ini"))).err();
    let text = e.map(|e| e.to_string()).unwrap_or_default();
    assert!(
        text.contains("inventory /nonexistent/inv.ini does not exist"),
        "{text}"
    );
}

#[test]
fn host_list_argument() {
    let i = Inventory::load(Some(Path::new("a.example.com,b,"))).unwrap_or_default();
    assert_eq!(i.hosts(), vec!["a.example.com", "b"]);
}
