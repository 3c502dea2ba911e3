//! The frame every plugin's `main` runs in (after Go's `skel`): read the
//! environment and stdin, check versions, dispatch the verb, and print the
//! result or the error JSON, and nothing else, to stdout.

use crate::env::{Command, Env};
use crate::error::{CniError, Code, Failure};
use crate::types::{parse_conf, version_json, CniResult, NetConf};
use crate::{logging, LATEST};
use std::io::{Read, Write};

/// A plugin's verbs. Each gets the checked environment and configuration,
/// and fails with the plugin's own error type, which the skel answers with
/// its code (see [`Failure`]).
pub trait Plugin {
    /// The plugin's error.
    type Error: Failure;
    /// ADD: attach and describe the attachment.
    fn add(&self, env: &Env, conf: &NetConf) -> Result<CniResult, Self::Error>;
    /// DEL: detach; must succeed when things are already gone.
    fn del(&self, env: &Env, conf: &NetConf) -> Result<(), Self::Error>;
    /// CHECK: verify the attachment against `conf.prev_result`.
    fn check(&self, env: &Env, conf: &NetConf) -> Result<(), Self::Error>;
    /// STATUS (1.1): can ADDs succeed now?
    fn status(&self, env: &Env, conf: &NetConf) -> Result<(), Self::Error>;
    /// GC (1.1): release what is not in `cni.dev/valid-attachments`.
    fn gc(&self, env: &Env, conf: &NetConf) -> Result<(), Self::Error>;
}

fn at_least(version: &str, min: &str) -> bool {
    let key = |v: &str| -> Vec<u32> { v.split('.').map(|p| p.parse().unwrap_or(0)).collect() };
    key(version) >= key(min)
}

/// Runs one invocation with explicit inputs; returns the stdout text and
/// the exit code. (`run` wires it to the process.)
pub fn dispatch<P: Plugin + ?Sized>(
    plugin: &P,
    get: impl Fn(&str) -> Option<String> + Copy,
    stdin: &[u8],
) -> (String, i32) {
    let fail = |e: &CniError, version: &str| (e.to_json(version), 1);
    let env = match Env::from_fn(get) {
        Ok(e) => e,
        Err(e) => {
            logging::init(&logging::resolve(None, get));
            tracing::error!(error = %e, "bad CNI environment");
            return fail(&CniError::from(&e), LATEST);
        }
    };
    if env.command == Command::Version {
        return (version_json().to_string(), 0);
    }
    let raw: Option<serde_json::Value> = serde_json::from_slice(stdin).ok();
    logging::init(&logging::resolve(raw.as_ref(), get));
    let conf = match parse_conf(stdin) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(verb = env.command.as_str(), error = %e, "bad network configuration");
            // Answer in the config's own version when it names one we speak.
            let v = raw
                .as_ref()
                .and_then(|r| r.get("cniVersion"))
                .and_then(serde_json::Value::as_str)
                .filter(|v| crate::SUPPORTED_VERSIONS.contains(v))
                .unwrap_or(LATEST);
            return fail(&CniError::from(&e), v);
        }
    };
    let v = conf.cni_version.clone();
    let min = match env.command {
        Command::Check => "0.4.0",
        Command::Status | Command::Gc => "1.1.0",
        _ => "0.0.0",
    };
    if !at_least(&v, min) {
        let e = CniError::new(
            Code::IncompatibleVersion,
            format!("config version {v} does not allow {}", env.command.as_str()),
        );
        return fail(&e, &v);
    }
    let span = tracing::info_span!(
        "cni",
        verb = env.command.as_str(),
        container = %env.container_id,
        ifname = %env.ifname,
        network = %conf.name
    );
    let _g = span.enter();
    let wire = |e: P::Error| CniError::from(&e);
    let outcome = match env.command {
        Command::Add => plugin.add(&env, &conf).map_err(wire).and_then(|r| {
            let j = r.to_json(&v).map_err(|e| CniError::from(&e))?;
            tracing::info!(
                netns = ?env.netns,
                ips = ?r.ips.iter().map(|i| i.address.as_str()).collect::<Vec<_>>(),
                "attached"
            );
            Ok(j.to_string())
        }),
        Command::Del => plugin.del(&env, &conf).map_err(wire).map(|_| {
            tracing::info!(netns = ?env.netns, "detached");
            String::new()
        }),
        Command::Check => plugin
            .check(&env, &conf)
            .map_err(wire)
            .map(|_| String::new()),
        Command::Status => plugin
            .status(&env, &conf)
            .map_err(wire)
            .map(|_| String::new()),
        Command::Gc => plugin.gc(&env, &conf).map_err(wire).map(|_| String::new()),
        Command::Version => unreachable!("answered above"),
    };
    match outcome {
        Ok(out) => (out, 0),
        Err(e) => {
            tracing::error!(code = e.code.number(), error = %e, "failed");
            fail(&e, &v)
        }
    }
}

/// Runs the plugin for this process: reads the real environment and stdin,
/// prints to stdout, returns the exit code for `std::process::exit`.
pub fn run<P: Plugin + ?Sized>(plugin: &P) -> i32 {
    let mut stdin = Vec::new();
    let is_version = std::env::var("CNI_COMMAND").is_ok_and(|c| c == "VERSION");
    if !is_version {
        if let Err(e) = std::io::stdin().read_to_end(&mut stdin) {
            let err = CniError::new(Code::Io, "cannot read the network configuration from stdin")
                .with_details(e.to_string());
            println!("{}", err.to_json(LATEST));
            return 1;
        }
    }
    let (out, code) = dispatch(plugin, |k| std::env::var(k).ok(), &stdin);
    if !out.is_empty() {
        let mut o = std::io::stdout().lock();
        let _ = o.write_all(out.as_bytes());
        let _ = o.write_all(b"\n");
        let _ = o.flush();
    }
    code
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A plugin whose every verb fails with one typed error.
    struct Failing;

    #[derive(Debug, thiserror::Error)]
    #[error("port p0 is not on bridge br0")]
    struct Drift;

    impl Failure for Drift {
        fn code(&self) -> Code {
            Code::Plugin(101)
        }
        fn details(&self) -> Option<String> {
            Some("it is on br1".into())
        }
    }

    impl Plugin for Failing {
        type Error = Drift;
        fn add(&self, _: &Env, _: &NetConf) -> Result<CniResult, Drift> {
            Err(Drift)
        }
        fn del(&self, _: &Env, _: &NetConf) -> Result<(), Drift> {
            Err(Drift)
        }
        fn check(&self, _: &Env, _: &NetConf) -> Result<(), Drift> {
            Err(Drift)
        }
        fn status(&self, _: &Env, _: &NetConf) -> Result<(), Drift> {
            Err(Drift)
        }
        fn gc(&self, _: &Env, _: &NetConf) -> Result<(), Drift> {
            Err(Drift)
        }
    }

    fn run(verb: &str, stdin: &str) -> (serde_json::Value, i32) {
        let get = |k: &str| -> Option<String> {
            Some(match k {
                "CNI_COMMAND" => verb.to_string(),
                "CNI_CONTAINERID" => "c".into(),
                "CNI_NETNS" => "/nonexistent".into(),
                "CNI_IFNAME" => "eth0".into(),
                "CNI_PATH" => "/nonexistent".into(),
                "BERTH_CNI_LOG_FILE" => "/dev/null".into(),
                "BERTH_CNI_CONFIG" => "/nonexistent".into(),
                _ => return None,
            })
        };
        let (out, code) = dispatch(&Failing, get, stdin.as_bytes());
        (serde_json::from_str(&out).unwrap(), code)
    }

    /// The skel, and only the skel, turns each typed error into the error
    /// JSON: its code, its message, its details, in the config's version.
    #[test]
    fn typed_errors_reach_the_wire_with_their_codes() {
        let conf = r#"{"cniVersion":"0.4.0","name":"n","type":"t"}"#;
        let (v, code) = run("CHECK", conf);
        assert_eq!(code, 1);
        assert_eq!(v["code"], 101);
        assert_eq!(v["msg"], "port p0 is not on bridge br0");
        assert_eq!(v["details"], "it is on br1");
        assert_eq!(v["cniVersion"], "0.4.0");
        let (v, _) = run(
            "ADD",
            r#"{"cniVersion":"1.0.0","name":"n","type":"t","mtu":1}"#,
        );
        assert_eq!(v["code"], 101);
        let (v, _) = run("ADD", r#"{"cniVersion":"1.0.0","type":"t"}"#);
        assert_eq!(
            (v["code"].clone(), v["msg"].clone()),
            (7.into(), "name is required".into())
        );
        let (v, _) = run(
            "ADD",
            r#"{"cniVersion":"1.0.0","name":"n","type":"t","runtimeConfig":7}"#,
        );
        assert_eq!(v["code"], 7);
        assert!(
            v["msg"].as_str().unwrap().starts_with("runtimeConfig: "),
            "{v}"
        );
        let (v, _) = run("FROB", conf);
        assert_eq!(
            (v["code"].clone(), v["cniVersion"].clone()),
            (4.into(), crate::LATEST.into())
        );
        let (v, _) = run("GC", conf);
        assert_eq!(v["code"], 1, "GC needs 1.1.0: {v}");
    }

    #[test]
    fn versions_compare_numerically() {
        assert!(at_least("1.1.0", "1.1.0"));
        assert!(at_least("0.4.0", "0.4.0"));
        assert!(!at_least("0.3.1", "0.4.0"));
        assert!(at_least("1.0.0", "0.4.0"));
        assert!(!at_least("1.0.0", "1.1.0"));
    }
}
