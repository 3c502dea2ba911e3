//! The VM tier: a Debian 12 guest with systemd as PID 1 and cgroup v2
//! unified, where most production hosts are, booted once per test process
//! under TCG (nested KVM hangs on this machine).
//!
//! * `scripts/install-vm` makes the parts once into the test cache (qemu
//!   unpacked from Debian's packages, the guest image by debootstrap) and
//!   prints where they are.
//! * The image boots read-only underneath (`snapshot=on`: the guest's writes
//!   go to a temporary overlay qemu deletes), so every run starts the same.
//! * This process's share directory is the guest's `/berth` (9p, read-only):
//!   Berth's freshly built binaries, a busybox rootfs, and whatever a test
//!   puts there (bundles' `config.json`, scripts). Files written on the host
//!   are seen at once.
//! * Commands run through the QEMU guest agent (`guest-exec`) on a
//!   virtio-serial port: output and exit status, several at a time.
//! * qemu is stopped at exit by its pid; it leaves no overlay, lock or tap
//!   (the guest has no network).

use crate::artifacts::{binary, scratch};
use crate::cmd::Ran;
use crate::process::Daemon;
use base64::Engine as _;
use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// How long the guest may take from qemu's start to its agent answering.
const BOOT_TIMEOUT: Duration = Duration::from_secs(240);

/// Where the guest sees the share.
pub const GUEST_SHARE: &str = "/berth";

/// The parts `scripts/install-vm` made.
#[derive(Debug, Clone)]
struct Parts {
    qemu: PathBuf,
    kernel: PathBuf,
    initrd: PathBuf,
    image: PathBuf,
}

fn parts() -> Parts {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/install-vm");
    let out = std::process::Command::new(&script)
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::inherit())
        .output()
        .unwrap_or_else(|e| panic!("VM tier: cannot run {}: {e}", script.display()));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "VM tier: {} failed ({}): the tier needs qemu and a guest image; run scripts/install-test-deps",
        script.display(),
        out.status
    );
    let get = |k: &str| -> PathBuf {
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{k}=")))
            .map(PathBuf::from)
            .unwrap_or_else(|| panic!("VM tier: scripts/install-vm printed no {k}: {text}"))
    };
    Parts {
        qemu: get("QEMU"),
        kernel: get("KERNEL"),
        initrd: get("INITRD"),
        image: get("IMAGE"),
    }
}

/// The QEMU guest agent's JSON protocol over the virtio-serial port.
struct Agent {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
}

impl Agent {
    /// Connects and syncs: whatever the agent said before is skipped.
    fn connect(socket: &Path, deadline: Instant) -> Result<Agent, String> {
        let stream = UnixStream::connect(socket).map_err(|e| format!("connect: {e}"))?;
        stream
            .set_read_timeout(Some(Duration::from_secs(2)))
            .map_err(|e| e.to_string())?;
        let mut agent = Agent {
            reader: BufReader::new(stream.try_clone().map_err(|e| e.to_string())?),
            writer: stream,
        };
        // Until the guest's agent runs, nobody reads the port: ask again
        // every 2 s, each time with a new id. Answers come in order, so the
        // one to the latest ask is the last: earlier ones are skipped.
        let mut id = u64::from(std::process::id()) << 20;
        while Instant::now() < deadline {
            id += 1;
            agent.send(&json!({"execute": "guest-sync", "arguments": {"id": id}}))?;
            let until = Instant::now() + Duration::from_secs(2);
            while Instant::now() < until {
                match agent.read() {
                    Ok(v) if v["return"] == json!(id) => {
                        agent
                            .writer
                            .set_read_timeout(Some(Duration::from_secs(30)))
                            .map_err(|e| e.to_string())?;
                        return Ok(agent);
                    }
                    Ok(_) => {}
                    Err(_) => break,
                }
            }
        }
        Err("the guest agent never answered".into())
    }

    fn send(&mut self, v: &Value) -> Result<(), String> {
        let mut line = serde_json::to_vec(v).map_err(|e| e.to_string())?;
        line.push(b'\n');
        self.writer
            .write_all(&line)
            .map_err(|e| format!("agent write: {e}"))
    }

    fn read(&mut self) -> Result<Value, String> {
        let mut buf = Vec::new();
        loop {
            buf.clear();
            let n = self
                .reader
                .read_until(b'\n', &mut buf)
                .map_err(|e| format!("agent read: {e}"))?;
            if n == 0 {
                return Err("the guest agent closed the port".into());
            }
            // A sync answer may start with 0xFF; skip it and blank lines.
            let line = String::from_utf8_lossy(&buf);
            let t = line.trim_matches(|c: char| c.is_whitespace() || c == '\u{fffd}');
            if !t.is_empty() {
                return serde_json::from_str(t).map_err(|e| format!("agent said {t:?}: {e}"));
            }
        }
    }

    /// One request and its answer's `return`.
    fn call(&mut self, cmd: &str, args: Value) -> Result<Value, String> {
        self.send(&json!({"execute": cmd, "arguments": args}))?;
        let v = self.read()?;
        match v.get("return") {
            Some(r) => Ok(r.clone()),
            None => Err(format!("{cmd}: {v}")),
        }
    }
}

/// The booted guest.
pub struct Vm {
    agent: Mutex<Agent>,
    share: PathBuf,
    console: PathBuf,
    /// How long boot took, for the notes.
    pub boot_time: Duration,
}

static QEMU: Mutex<Option<Daemon>> = Mutex::new(None);

/// Copies `from` to `to` (a file), creating the directory.
fn put(from: &Path, to: &Path) {
    std::fs::create_dir_all(to.parent().expect("parent")).expect("mkdir share");
    std::fs::copy(from, to).unwrap_or_else(|e| panic!("copy {}: {e}", from.display()));
}

/// The guest, booted on first use; every later call shares it.
pub fn vm() -> &'static Vm {
    static VM: OnceLock<Vm> = OnceLock::new();
    VM.get_or_init(boot)
}

fn boot() -> Vm {
    crate::require_root();
    let p = parts();
    let dir = scratch().join("vm");
    let share = dir.join("share");
    std::fs::create_dir_all(&share).expect("mkdir share");
    for b in [
        "berth-runtime",
        "libberth_cpus.so",
        "berth-cri-probe",
        "berth-ovs-vlan",
    ] {
        put(&binary(b), &share.join("bin").join(b));
    }
    // The images CRI needs (a sandbox image and busybox), as OCI archives.
    let images = [
        (
            crate::engines::containerd::PAUSE_IMAGE,
            "pause",
            &["sleep", "1000000"][..],
        ),
        (crate::images::BUSYBOX_IMAGE, "busybox", &["sh"][..]),
    ];
    for (reference, name, cmd) in images {
        let archive = crate::images::oci_archive(crate::images::busybox_tar(), reference, cmd);
        put(&archive, &share.join("images").join(format!("{name}.tar")));
    }
    // busybox, `nproc` and its libraries, and libdl.so.2 (which the preload
    // injection looks for in a glibc rootfs).
    let rootfs = crate::programs::glibc_rootfs(true);
    crate::cmd::run(
        crate::cmd::command("cp")
            .arg("-a")
            .arg(&rootfs)
            .arg(share.join("rootfs")),
    );
    let socket = dir.join("agent.sock");
    let console = dir.join("console.log");
    let mut cmd = std::process::Command::new(&p.qemu);
    cmd.arg("-name")
        .arg(format!("{}-vm", crate::names::process_prefix()))
        .args(["-L", "/usr/share/seabios", "-L", "/usr/share/qemu"])
        .args(["-accel", "tcg,thread=multi", "-m", "2048", "-smp", "4"])
        .args(["-nodefaults", "-display", "none", "-no-reboot"])
        .arg("-kernel")
        .arg(&p.kernel)
        .arg("-initrd")
        .arg(&p.initrd)
        .arg("-append")
        .arg("console=ttyS0 root=/dev/vda rw systemd.unified_cgroup_hierarchy=1 panic=-1")
        .arg("-drive")
        .arg(format!(
            "file={},if=virtio,format=raw,snapshot=on",
            p.image.display()
        ))
        .arg("-virtfs")
        .arg(format!(
            "local,path={},mount_tag=berth,security_model=none,readonly=on",
            share.display()
        ))
        .arg("-chardev")
        .arg(format!(
            "socket,id=qga,path={},server=on,wait=off",
            socket.display()
        ))
        .args(["-device", "virtio-serial"])
        .args([
            "-device",
            "virtserialport,chardev=qga,name=org.qemu.guest_agent.0",
        ])
        .arg("-serial")
        .arg(format!("file:{}", console.display()));
    let start = Instant::now();
    let daemon = Daemon::spawn("qemu", &mut cmd, &dir.join("qemu.log"));
    *QEMU.lock().unwrap() = Some(daemon);
    crate::cleanup::at_exit("the test VM (qemu)", || {
        if let Some(mut d) = QEMU.lock().unwrap().take() {
            d.stop(Duration::from_secs(5));
        }
    });
    let deadline = start + BOOT_TIMEOUT;
    let log = console.clone();
    let fail = move |why: String| -> ! {
        panic!(
            "VM tier: the guest did not come up ({why}); console {}:\n{}",
            log.display(),
            tail(&log, 30)
        )
    };
    crate::process::wait_until(Duration::from_secs(10), || socket.exists());
    if let Some(d) = QEMU.lock().unwrap().as_mut() {
        d.assert_alive(&dir.join("qemu.log"));
    }
    let agent = Agent::connect(&socket, deadline).unwrap_or_else(|e| fail(e));
    let vm = Vm {
        agent: Mutex::new(agent),
        share,
        console,
        boot_time: start.elapsed(),
    };
    eprintln!(
        "harness: the test VM answered {:?} after qemu started",
        vm.boot_time
    );
    // systemd may still be starting units: wait for it to settle.
    let r =
        vm.sh("systemctl is-system-running --wait || true; mountpoint -q /berth && echo shared");
    if !r.stdout.contains("shared") {
        fail(format!("/berth is not mounted: {}{}", r.stdout, r.stderr));
    }
    vm
}

fn tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

impl Vm {
    /// Runs `script` with bash in the guest, as root, and waits up to 10
    /// minutes for it.
    pub fn sh(&self, script: &str) -> Ran {
        self.sh_for(script, Duration::from_secs(600))
    }

    /// [`Vm::sh`] with a time limit.
    pub fn sh_for(&self, script: &str, limit: Duration) -> Ran {
        let call = |cmd: &str, args: Value| -> Value {
            self.agent
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .call(cmd, args)
                .unwrap_or_else(|e| {
                    panic!(
                        "VM tier: guest agent: {e}; console:\n{}",
                        tail(&self.console, 20)
                    )
                })
        };
        let pid = call(
            "guest-exec",
            json!({
                "path": "/bin/bash",
                "arg": ["-c", script],
                "env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOME=/root"],
                "capture-output": true,
            }),
        )["pid"]
            .clone();
        let deadline = Instant::now() + limit;
        let mut pause = Duration::from_millis(20);
        loop {
            let st = call("guest-exec-status", json!({"pid": pid}));
            if st["exited"] == json!(true) {
                let text = |k: &str| {
                    let b = base64::engine::general_purpose::STANDARD
                        .decode(st[k].as_str().unwrap_or_default())
                        .unwrap_or_default();
                    String::from_utf8_lossy(&b).into_owned()
                };
                return Ran {
                    code: st["exitcode"]
                        .as_i64()
                        .map_or(-1, |c| i32::try_from(c).unwrap_or(-1)),
                    stdout: text("out-data"),
                    stderr: text("err-data"),
                };
            }
            assert!(
                Instant::now() < deadline,
                "VM tier: `{script}` ran over {limit:?} in the guest"
            );
            std::thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_millis(200));
        }
    }

    /// [`Vm::sh`], panicking with the output unless it exits 0; returns stdout.
    pub fn run(&self, script: &str) -> String {
        let r = self.sh(script);
        assert!(
            r.ok(),
            "in the guest, `{script}` exited {}:\n{}\n{}",
            r.code,
            r.stdout,
            r.stderr
        );
        r.stdout
    }

    /// The host side of the guest's `/berth`; a file put under it is at
    /// `/berth/<rel>` in the guest at once.
    pub fn share(&self) -> &Path {
        &self.share
    }

    /// Writes `text` to `/berth/<rel>` (as the guest sees it); returns the guest path.
    pub fn put_file(&self, rel: &str, text: &str) -> String {
        let p = self.share.join(rel);
        std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir share");
        std::fs::write(&p, text).expect("write share file");
        format!("{GUEST_SHARE}/{rel}")
    }
}
