//! placeholder: the inventory (being written on the `inventory` branch); only the
//! interface the engine calls, with the implicit localhost.

use indexmap::IndexMap;

/// How a host is reached.
#[derive(Debug, Clone, PartialEq)]
pub enum ConnectionKind {
    /// On the controller.
    Local,
    /// Over SSH.
    Ssh,
}

/// Connection settings of a host.
#[derive(Debug, Clone, PartialEq)]
pub struct ConnectionSettings {
    /// Transport.
    pub kind: ConnectionKind,
    /// Address.
    pub address: String,
    /// Port.
    pub port: Option<u16>,
    /// User.
    pub user: Option<String>,
    /// Key.
    pub key_file: Option<String>,
    /// Password.
    pub password: Option<String>,
    /// Become.
    pub become_: bool,
    /// Become user.
    pub become_user: Option<String>,
    /// Become method.
    pub become_method: Option<String>,
    /// Become password.
    pub become_password: Option<String>,
    /// ssh args.
    pub ssh_common_args: Option<String>,
    /// Vars used.
    pub vars_used: Vec<String>,
}

/// Inventory.
#[derive(Debug, Clone)]
pub struct Inventory {
    hosts: Vec<String>,
}

impl Inventory {
    /// Load.
    pub fn load(_path: Option<&std::path::Path>) -> Result<Inventory, crate::error::InputErrors> {
        Ok(Self::implicit_localhost())
    }
    /// Implicit.
    pub fn implicit_localhost() -> Inventory {
        Inventory {
            hosts: vec!["localhost".into()],
        }
    }
    /// Hosts.
    pub fn hosts(&self) -> Vec<String> {
        self.hosts.clone()
    }
    /// Select.
    pub fn select(&self, pattern: &str) -> Result<Vec<String>, String> {
        match pattern {
            "all" | "localhost" | "*" => Ok(self.hosts.clone()),
            p => Err(format!("host pattern `{p}`: no host or group named `{p}`")),
        }
    }
    /// Vars.
    pub fn host_vars(&self, host: &str) -> IndexMap<String, serde_json::Value> {
        let mut m = IndexMap::new();
        m.insert(
            "inventory_hostname".into(),
            serde_json::Value::String(host.into()),
        );
        m
    }
    /// Groups.
    pub fn groups(&self) -> IndexMap<String, Vec<String>> {
        let mut m = IndexMap::new();
        m.insert("all".into(), self.hosts.clone());
        m
    }
    /// Group names.
    pub fn group_names(&self, _host: &str) -> Vec<String> {
        Vec::new()
    }
    /// Connection.
    pub fn connection(&self, host: &str) -> ConnectionSettings {
        ConnectionSettings {
            kind: ConnectionKind::Local,
            address: host.into(),
            port: None,
            user: None,
            key_file: None,
            password: None,
            become_: false,
            become_user: None,
            become_method: None,
            become_password: None,
            ssh_common_args: None,
            vars_used: Vec::new(),
        }
    }
    /// JSON.
    pub fn to_ansible_json(&self) -> serde_json::Value {
        serde_json::json!({"all": {"hosts": self.hosts}})
    }
    /// Graph.
    pub fn graph_text(&self) -> String {
        format!("@all:\n  |--{}\n", self.hosts.join(", "))
    }
}
