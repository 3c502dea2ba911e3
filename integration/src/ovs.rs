//! A private Open vSwitch on the userspace (netdev) datapath: this kernel has
//! no openvswitch module. `ovsdb-server` and `ovs-vswitchd` run in the
//! foreground under a scratch rundir and are stopped by pid.

use crate::artifacts::fresh_dir;
use crate::cleanup::at_exit;
use crate::cmd::{command, run, sh, try_run};
use crate::names::unique;
use crate::process::{wait_until, Daemon};
use std::path::PathBuf;
use std::process::Command;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

const SCHEMA: &str = "/usr/share/openvswitch/vswitch.ovsschema";

/// The private OVS instance of this test process.
#[derive(Debug)]
pub struct Ovs {
    /// The rundir (`OVS_RUNDIR`): sockets, pid files, logs.
    pub rundir: PathBuf,
    /// The OVSDB unix socket, as plugins' `socket_file` takes it.
    pub db_socket: PathBuf,
    daemons: Mutex<Vec<Daemon>>,
}

/// The shared OVS instance, started on first use.
pub fn ovs() -> &'static Ovs {
    static O: OnceLock<Ovs> = OnceLock::new();
    O.get_or_init(|| {
        crate::require_root();
        let rundir = fresh_dir("ovs");
        let db = rundir.join("conf.db");
        let db_socket = rundir.join("db.sock");
        sh(
            "ovsdb-tool",
            ["create".as_ref(), db.as_os_str(), SCHEMA.as_ref()],
        );
        let log = rundir.join("ovsdb-server.log");
        let mut server = Daemon::spawn(
            "ovsdb-server",
            command("ovsdb-server")
                .env("OVS_RUNDIR", &rundir)
                .arg(&db)
                .arg(format!("--remote=punix:{}", db_socket.display()))
                .arg(format!(
                    "--unixctl={}",
                    rundir.join("ovsdb-server.ctl").display()
                ))
                .arg(format!(
                    "--pidfile={}",
                    rundir.join("ovsdb-server.pid").display()
                ))
                .arg("--no-chdir")
                .arg("-vconsole:warn"),
            &log,
        );
        assert!(
            wait_until(Duration::from_secs(10), || {
                server.assert_alive(&log);
                db_socket.exists()
            }),
            "ovsdb-server did not create {}",
            db_socket.display()
        );
        let o = Ovs {
            rundir: rundir.clone(),
            db_socket: db_socket.clone(),
            daemons: Mutex::new(vec![server]),
        };
        // TSO must be enabled before vswitchd starts, or TCP over veth fails checksums.
        o.vsctl(&["--no-wait", "init"]);
        o.vsctl(&[
            "--no-wait",
            "set",
            "Open_vSwitch",
            ".",
            "other_config:userspace-tso-enable=true",
        ]);
        let vlog = rundir.join("ovs-vswitchd.log");
        let mut vswitchd = Daemon::spawn(
            "ovs-vswitchd",
            command("ovs-vswitchd")
                .env("OVS_RUNDIR", &rundir)
                .arg(format!("unix:{}", db_socket.display()))
                .arg(format!(
                    "--unixctl={}",
                    rundir.join("ovs-vswitchd.ctl").display()
                ))
                .arg(format!(
                    "--pidfile={}",
                    rundir.join("ovs-vswitchd.pid").display()
                ))
                .arg("--no-chdir")
                .arg("-vconsole:warn"),
            &vlog,
        );
        let ready = wait_until(Duration::from_secs(20), || {
            vswitchd.assert_alive(&vlog);
            try_run(o.vsctl_cmd().args([
                "--timeout=1",
                "set",
                "Open_vSwitch",
                ".",
                "external_ids:berth-ready=1",
            ]))
            .ok()
        });
        assert!(
            ready,
            "ovs-vswitchd did not come up; see {}",
            vlog.display()
        );
        o.daemons.lock().expect("lock").push(vswitchd);
        at_exit("openvswitch", || {
            let o = ovs();
            let mut ds = o.daemons.lock().unwrap_or_else(|e| e.into_inner());
            // vswitchd first (it removes its netdev taps), then the database.
            while let Some(mut d) = ds.pop() {
                d.stop(Duration::from_secs(10));
            }
        });
        o
    })
}

impl Ovs {
    /// An `ovs-vsctl` command bound to this instance.
    pub fn vsctl_cmd(&self) -> Command {
        let mut c = command("ovs-vsctl");
        c.env("OVS_RUNDIR", &self.rundir)
            .arg(format!("--db=unix:{}", self.db_socket.display()));
        c
    }

    /// Runs `ovs-vsctl args...`, panicking on failure; returns stdout.
    pub fn vsctl(&self, args: &[&str]) -> String {
        run(self.vsctl_cmd().args(args))
    }

    /// An `ovs-ofctl` command bound to this instance's vswitchd.
    pub fn ofctl_cmd(&self) -> Command {
        let mut c = command("ovs-ofctl");
        c.env("OVS_RUNDIR", &self.rundir);
        c
    }
}

/// A bridge on the userspace datapath (`datapath_type=netdev`), deleted on drop.
#[derive(Debug)]
pub struct OvsBridge {
    /// Its name (also the name of its internal tap port).
    pub name: String,
}

impl OvsBridge {
    /// Creates a fresh bridge on the shared instance.
    pub fn new() -> OvsBridge {
        let name = format!("{}b", unique());
        ovs().vsctl(&[
            "add-br",
            &name,
            "--",
            "set",
            "Bridge",
            &name,
            "datapath_type=netdev",
        ]);
        OvsBridge { name }
    }

    /// Adds `port` as an access port on VLAN `tag`.
    pub fn add_access_port(&self, port: &str, tag: u16) {
        ovs().vsctl(&["add-port", &self.name, port, &format!("tag={tag}")]);
    }
}

impl Default for OvsBridge {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for OvsBridge {
    fn drop(&mut self) {
        let _ = try_run(
            ovs()
                .vsctl_cmd()
                .args(["--if-exists", "del-br", &self.name]),
        );
    }
}
