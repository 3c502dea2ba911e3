//! The frame every plugin's `main` runs in (after Go's `skel`): read the
//! environment and stdin, check versions, dispatch the verb, and print the
//! result or the error JSON, and nothing else, to stdout.

use crate::env::{Command, Env};
use crate::error::{CniError, Code};
use crate::types::{parse_conf, version_json, CniResult, NetConf};
use crate::{logging, LATEST};
use std::io::{Read, Write};

/// A plugin's verbs. Each gets the checked environment and configuration.
pub trait Plugin {
    /// ADD: attach and describe the attachment.
    fn add(&self, env: &Env, conf: &NetConf) -> Result<CniResult, CniError>;
    /// DEL: detach; must succeed when things are already gone.
    fn del(&self, env: &Env, conf: &NetConf) -> Result<(), CniError>;
    /// CHECK: verify the attachment against `conf.prev_result`.
    fn check(&self, env: &Env, conf: &NetConf) -> Result<(), CniError>;
    /// STATUS (1.1): can ADDs succeed now?
    fn status(&self, env: &Env, conf: &NetConf) -> Result<(), CniError>;
    /// GC (1.1): release what is not in `cni.dev/valid-attachments`.
    fn gc(&self, env: &Env, conf: &NetConf) -> Result<(), CniError>;
}

fn at_least(version: &str, min: &str) -> bool {
    let key = |v: &str| -> Vec<u32> { v.split('.').map(|p| p.parse().unwrap_or(0)).collect() };
    key(version) >= key(min)
}

/// Runs one invocation with explicit inputs; returns the stdout text and
/// the exit code. (`run` wires it to the process.)
pub fn dispatch(
    plugin: &dyn Plugin,
    get: impl Fn(&str) -> Option<String> + Copy,
    stdin: &[u8],
) -> (String, i32) {
    let fail = |e: &CniError, version: &str| (e.to_json(version), 1);
    let env = match Env::from_fn(get) {
        Ok(e) => e,
        Err(e) => {
            logging::init(&logging::resolve(None, get));
            tracing::error!(error = %e, "bad CNI environment");
            return fail(&e, LATEST);
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
            return fail(&e, v);
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
    let outcome = match env.command {
        Command::Add => plugin.add(&env, &conf).and_then(|r| {
            let j = r.to_json(&v)?;
            tracing::info!(
                netns = ?env.netns,
                ips = ?r.ips.iter().map(|i| i.address.as_str()).collect::<Vec<_>>(),
                "attached"
            );
            Ok(j.to_string())
        }),
        Command::Del => plugin.del(&env, &conf).map(|_| {
            tracing::info!(netns = ?env.netns, "detached");
            String::new()
        }),
        Command::Check => plugin.check(&env, &conf).map(|_| String::new()),
        Command::Status => plugin.status(&env, &conf).map(|_| String::new()),
        Command::Gc => plugin.gc(&env, &conf).map(|_| String::new()),
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
pub fn run(plugin: &dyn Plugin) -> i32 {
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
    use super::at_least;

    #[test]
    fn versions_compare_numerically() {
        assert!(at_least("1.1.0", "1.1.0"));
        assert!(at_least("0.4.0", "0.4.0"));
        assert!(!at_least("0.3.1", "0.4.0"));
        assert!(at_least("1.0.0", "0.4.0"));
        assert!(!at_least("1.0.0", "1.1.0"));
    }
}
