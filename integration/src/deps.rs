//! The host programs the tests may run: exactly the `PROGRAMS` list in
//! `scripts/install-test-deps`, which installs their packages and whose
//! `--check` preflight stops a run that lacks one before any test starts.
//!
//! Every way the harness starts a host program ([`crate::cmd`]) asks
//! [`require`] first, so a test that runs a program nobody installs fails at
//! once, naming the list to add it to, instead of passing on a machine where
//! it happened to be installed by hand and failing on a fresh one.

use std::path::Path;
use std::sync::OnceLock;

/// `scripts/install-test-deps`, whose `PROGRAMS='...'` block is the list.
const INSTALL_SCRIPT: &str = include_str!("../../scripts/install-test-deps");

/// One entry: a program name (looked up on PATH) or an absolute path, and
/// the Debian package that provides it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Program {
    /// The name or absolute path.
    pub program: String,
    /// Its Debian package.
    pub package: String,
}

/// Parses the `PROGRAMS='...'` block of an install script.
pub fn parse(script: &str) -> Vec<Program> {
    let Some((_, rest)) = script.split_once("\nPROGRAMS='") else {
        return Vec::new();
    };
    let block = rest.split_once('\'').map_or(rest, |(b, _)| b);
    block
        .lines()
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            Some(Program {
                program: w.next()?.to_string(),
                package: w.next()?.to_string(),
            })
        })
        .collect()
}

/// The list, parsed once.
pub fn programs() -> &'static [Program] {
    static LIST: OnceLock<Vec<Program>> = OnceLock::new();
    LIST.get_or_init(|| parse(INSTALL_SCRIPT))
}

/// Whether `program` (as given to `Command::new`) may run: a listed name, a
/// listed absolute path, a system path whose file name is listed, or one of
/// Berth's own or the build's binaries (anything outside the system
/// directories, and `berth-*`, or anything under a `berth-*` directory,
/// wherever a package installed it).
pub fn allowed(list: &[Program], program: &str) -> bool {
    let p = Path::new(program);
    let name = p.file_name().and_then(|n| n.to_str()).unwrap_or(program);
    if name.starts_with("berth-") || name.starts_with("libberth") {
        return true;
    }
    // Scripts Berth's packages install under their own directories
    // (`/usr/share/berth-log-appender/docker-plugin/install`).
    if p.components().any(|c| {
        c.as_os_str()
            .to_str()
            .is_some_and(|c| c.starts_with("berth-"))
    }) {
        return true;
    }
    let system = ["/usr/", "/bin/", "/sbin/", "/lib/", "/lib64/", "/opt/"]
        .iter()
        .any(|d| program.starts_with(d));
    if program.contains('/') && !system {
        return true;
    }
    list.iter()
        .any(|e| e.program == program || e.program == name)
}

/// Panics, naming the list, unless `program` may run (see [`allowed`]).
pub fn require(program: &str) {
    assert!(
        allowed(programs(), program),
        "the tests run `{program}`, which is not in the PROGRAMS list of scripts/install-test-deps: \
         add it there with the Debian package that provides it, so that a fresh machine installs it"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_install_script_lists_the_programs_with_their_packages() {
        let l = programs();
        assert!(l.len() > 40, "{l:?}");
        let find = |p: &str| {
            l.iter()
                .find(|e| e.program == p)
                .map(|e| e.package.as_str())
        };
        assert_eq!(find("lintian"), Some("lintian"));
        assert_eq!(find("ovs-vsctl"), Some("openvswitch-switch"));
        assert_eq!(
            find("/usr/lib/cni/macvlan"),
            Some("containernetworking-plugins")
        );
        assert!(l
            .iter()
            .all(|e| !e.package.is_empty() && !e.program.contains('\'')));
    }

    #[test]
    fn only_listed_host_programs_are_allowed() {
        let l = parse("x\nPROGRAMS='\nip   iproute2\n/usr/lib/cni/macvlan cnip\n'\nmore");
        assert_eq!(l.len(), 2);
        assert!(allowed(&l, "ip"));
        assert!(allowed(&l, "/usr/sbin/ip"));
        assert!(allowed(&l, "/usr/lib/cni/macvlan"));
        assert!(!allowed(&l, "/usr/lib/cni/bridge"));
        assert!(!allowed(&l, "cowsay"));
        assert!(!allowed(&l, "/usr/games/cowsay"));
        // Berth's own binaries and the build's, wherever they are.
        assert!(allowed(&l, "/usr/bin/berth-runtime"));
        assert!(allowed(
            &l,
            "/usr/share/berth-log-appender/docker-plugin/install"
        ));
        assert!(!allowed(&l, "/usr/share/other/install"));
        assert!(allowed(&l, "/var/cache/berth-test/target/debug/anything"));
        assert!(allowed(&l, "/tmp/bt1234/probes/print-cpus-glibc"));
    }

    #[test]
    fn an_unlisted_program_fails_naming_the_list() {
        let e = std::panic::catch_unwind(|| require("cowsay")).expect_err("must refuse");
        let msg = e.downcast_ref::<String>().cloned().unwrap_or_default();
        assert!(
            msg.contains("`cowsay`") && msg.contains("scripts/install-test-deps"),
            "{msg}"
        );
    }
}
