//! The OVS side of an attachment: the Port, Interface, QoS and Queue rows,
//! one OVSDB transaction per change, each followed by waiting for
//! ovs-vswitchd to apply it (`cur_cfg` reaching the new `next_cfg`).

use crate::conf::{EgressShaping, OvsConf};
use crate::error::OvsError;
use crate::ovsdb::{map, map_get, set_members, uuid, uuid_of, Client, OvsdbError};
use berth_cni::qos::Shape;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

/// `external_ids` key naming the owner of a port.
pub const OWNER: &str = "berth.owner";
/// `external_ids` key: the container ID.
pub const CONTAINER: &str = "berth.container_id";
/// `external_ids` key: `CNI_IFNAME`.
pub const IFNAME: &str = "berth.ifname";
/// `external_ids` key: the netns path.
pub const NETNS: &str = "berth.netns";
/// `external_ids` key: the network name.
pub const NETWORK: &str = "berth.network";
/// The owner value.
pub const PLUGIN: &str = "berth-ovs-vlan";

/// Who an attachment belongs to.
pub struct Owner<'a> {
    /// `CNI_CONTAINERID`.
    pub container_id: &'a str,
    /// `CNI_IFNAME`.
    pub ifname: &'a str,
    /// `CNI_NETNS`.
    pub netns: &'a str,
    /// The network name.
    pub network: &'a str,
}

/// Bumps `next_cfg` in a transaction of its own and waits for vswitchd.
fn bump_ops() -> [Value; 2] {
    [
        json!({"op": "mutate", "table": "Open_vSwitch", "where": [], "mutations": [["next_cfg", "+=", 1]]}),
        json!({"op": "select", "table": "Open_vSwitch", "where": [], "columns": ["next_cfg"]}),
    ]
}

fn next_cfg(results: &[Value]) -> Option<i64> {
    results
        .last()?
        .get("rows")?
        .get(0)?
        .get("next_cfg")?
        .as_i64()
}

/// Waits until ovs-vswitchd reports `cur_cfg >= want`.
pub fn wait_applied(db: &mut Client, want: i64, timeout: Duration) -> Result<(), OvsError> {
    let deadline = Instant::now() + timeout;
    let mut pause = Duration::from_micros(500);
    loop {
        let rows = db.select("Open_vSwitch", json!([]), &["cur_cfg"])?;
        let cur = rows
            .first()
            .and_then(|r| r.get("cur_cfg"))
            .and_then(Value::as_i64)
            .unwrap_or(0);
        if cur >= want {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(OvsError::NotApplied {
                secs: timeout.as_secs(),
                cur,
                want,
            });
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(20));
    }
}

/// Adds port `name` (an existing link) to the bridge with the VLAN settings,
/// the QoS for traffic to the container and, for `police`, the ingress
/// policing; waits for vswitchd and checks the Interface came up.
pub fn add(
    db: &mut Client,
    c: &OvsConf,
    name: &str,
    owner: &Owner<'_>,
    to_container: Option<Shape>,
    from_container: Option<Shape>,
) -> Result<(), OvsError> {
    let ids = map(&[
        (OWNER, PLUGIN.to_string()),
        (CONTAINER, owner.container_id.to_string()),
        (IFNAME, owner.ifname.to_string()),
        (NETNS, owner.netns.to_string()),
        (NETWORK, owner.network.to_string()),
    ]);
    let mut ops = vec![json!({
        "op": "wait", "timeout": 0, "table": "Bridge",
        "where": [["name", "==", c.bridge]], "columns": ["name"],
        "until": "==", "rows": [{"name": c.bridge}]
    })];
    let mut iface = json!({"name": name, "type": "", "external_ids": ids});
    if let (EgressShaping::Police, Some(s)) = (c.egress_shaping, from_container) {
        iface["ingress_policing_rate"] = json!((s.rate / 1000).max(1));
        iface["ingress_policing_burst"] = json!((s.burst / 1000).max(1));
    }
    ops.push(json!({"op": "insert", "table": "Interface", "row": iface, "uuid-name": "iface"}));
    let mut port = json!({
        "name": name,
        "interfaces": ["named-uuid", "iface"],
        "external_ids": ids,
    });
    match (c.vlan, c.trunk.is_empty()) {
        (Some(v), true) => {
            port["tag"] = json!(v);
            port["vlan_mode"] = json!("access");
        }
        (None, false) => {
            port["trunks"] = json!(["set", c.trunk]);
            port["vlan_mode"] = json!("trunk");
        }
        (Some(v), false) => {
            port["tag"] = json!(v);
            port["trunks"] = json!(["set", c.trunk]);
            port["vlan_mode"] = json!("native-untagged");
        }
        (None, true) => {}
    }
    if let Some(s) = to_container {
        ops.push(json!({"op": "insert", "table": "Queue", "uuid-name": "q0", "row": {
            "other_config": map(&[("max-rate", s.rate.to_string()), ("burst", s.burst.to_string())]),
            "external_ids": ids,
        }}));
        ops.push(
            json!({"op": "insert", "table": "QoS", "uuid-name": "qos", "row": {
                "type": "linux-htb",
                "other_config": map(&[("max-rate", s.rate.to_string())]),
                "queues": ["map", [[0, ["named-uuid", "q0"]]]],
                "external_ids": ids,
            }}),
        );
        port["qos"] = json!(["named-uuid", "qos"]);
    }
    ops.push(json!({"op": "insert", "table": "Port", "row": port, "uuid-name": "port"}));
    ops.push(
        json!({"op": "mutate", "table": "Bridge", "where": [["name", "==", c.bridge]],
        "mutations": [["ports", "insert", ["set", [["named-uuid", "port"]]]]]}),
    );
    ops.extend(bump_ops());
    let r = db.transact(ops).map_err(|e| match e {
        OvsdbError::Refused(m) if m.contains("timed out") => OvsError::NoBridge(c.bridge.clone()),
        e => OvsError::at(&c.socket, e),
    })?;
    let want = next_cfg(&r).unwrap_or(0);
    wait_applied(db, want, c.timeout)?;
    let rows = db.select(
        "Interface",
        json!([["name", "==", name]]),
        &["error", "ofport"],
    )?;
    let row = rows.first().cloned().unwrap_or_default();
    let error: Vec<String> = set_members(&row["error"])
        .iter()
        .filter_map(|v| v.as_str().map(str::to_string))
        .collect();
    let ofport = set_members(&row["ofport"])
        .first()
        .and_then(Value::as_i64)
        .unwrap_or(-1);
    if !error.is_empty() || ofport < 1 {
        return Err(OvsError::PortFailed {
            port: name.to_string(),
            bridge: c.bridge.clone(),
            why: if error.is_empty() {
                format!("ofport {ofport}")
            } else {
                error.join("; ")
            },
        });
    }
    Ok(())
}

/// A port of ours, as OVSDB has it.
#[derive(Debug, Clone)]
pub struct Found {
    /// The Port row.
    pub port: String,
    /// Its name (the host end of the veth).
    pub name: String,
    /// Its QoS row, if any.
    pub qos: Option<String>,
    /// Its tag.
    pub tag: Option<i64>,
    /// Its trunks.
    pub trunks: Vec<i64>,
    /// Container ID and ifname from `external_ids`.
    pub owner: (String, String),
}

/// Our ports matching `ids` (pairs that must all be in `external_ids`).
pub fn find(db: &mut Client, ids: &[(&str, String)]) -> Result<Vec<Found>, OvsdbError> {
    let mut all = vec![(OWNER, PLUGIN.to_string())];
    all.extend(ids.iter().cloned());
    let rows = db.select(
        "Port",
        json!([["external_ids", "includes", map(&all)]]),
        &["_uuid", "name", "qos", "tag", "trunks", "external_ids"],
    )?;
    Ok(rows
        .iter()
        .filter_map(|r| {
            Some(Found {
                port: uuid_of(&r["_uuid"])?,
                name: r["name"].as_str()?.to_string(),
                qos: set_members(&r["qos"]).first().and_then(uuid_of),
                tag: set_members(&r["tag"]).first().and_then(Value::as_i64),
                trunks: set_members(&r["trunks"])
                    .iter()
                    .filter_map(Value::as_i64)
                    .collect(),
                owner: (
                    map_get(&r["external_ids"], CONTAINER)
                        .unwrap_or_default()
                        .to_string(),
                    map_get(&r["external_ids"], IFNAME)
                        .unwrap_or_default()
                        .to_string(),
                ),
            })
        })
        .collect())
}

/// The operation deleting row `id` of `table`.
fn delete_row(table: &str, id: &str) -> Value {
    json!({"op": "delete", "table": table, "where": [["_uuid", "==", uuid(id)]]})
}

/// Operations deleting the Queue rows a QoS row's `queues` map names.
fn delete_queues(qos_row: &Value) -> Vec<Value> {
    qos_row["queues"]
        .get(1)
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|kv| kv.get(1).and_then(uuid_of))
        .map(|q| delete_row("Queue", &q))
        .collect()
}

/// Removes `ports` (and their QoS and Queue rows, which OVSDB does not
/// collect by itself) in one transaction. It does not wait for vswitchd to
/// apply it: the next ADD's own wait orders after it, and the caller can
/// delete the veth meanwhile (which costs the kernel an RCU grace period).
pub fn remove(db: &mut Client, ports: &[Found]) -> Result<(), OvsdbError> {
    if ports.is_empty() {
        return Ok(());
    }
    let mut ops = Vec::new();
    for p in ports {
        ops.push(json!({"op": "mutate", "table": "Bridge",
            "where": [["ports", "includes", uuid(&p.port)]],
            "mutations": [["ports", "delete", uuid(&p.port)]]}));
        if let Some(q) = &p.qos {
            let rows = db.select("QoS", json!([["_uuid", "==", uuid(q)]]), &["queues"])?;
            for r in rows {
                ops.extend(delete_queues(&r));
            }
            // The port must stop referring to the QoS row before it can go.
            ops.push(
                json!({"op": "mutate", "table": "Port", "where": [["_uuid", "==", uuid(&p.port)]],
                "mutations": [["qos", "delete", uuid(q)]]}),
            );
            ops.push(delete_row("QoS", q));
        }
    }
    ops.push(json!({"op": "mutate", "table": "Open_vSwitch", "where": [], "mutations": [["next_cfg", "+=", 1]]}));
    db.transact(ops)?;
    Ok(())
}

/// Orphaned QoS and Queue rows of ours (left when a port was removed by
/// someone else): removed. Returns how many.
pub fn remove_orphan_qos(db: &mut Client, network: &str) -> Result<usize, OvsdbError> {
    let ids = map(&[(OWNER, PLUGIN.to_string()), (NETWORK, network.to_string())]);
    let used: Vec<String> = db
        .select("Port", json!([]), &["qos"])?
        .iter()
        .flat_map(|r| set_members(&r["qos"]))
        .filter_map(|v| uuid_of(&v))
        .collect();
    let qos = db.select(
        "QoS",
        json!([["external_ids", "includes", ids]]),
        &["_uuid", "queues"],
    )?;
    let mut ops = Vec::new();
    for r in qos {
        let Some(u) = uuid_of(&r["_uuid"]) else {
            continue;
        };
        if used.contains(&u) {
            continue;
        }
        ops.push(delete_row("QoS", &u));
        ops.extend(delete_queues(&r));
    }
    let n = ops.len();
    if n > 0 {
        db.transact(ops)?;
    }
    Ok(n)
}
