//! `libberth_cpus.so`: an `LD_PRELOAD` library that makes programs see the
//! container's CPU count instead of the host's.
//!
//! With `N` from `BERTH_NPROC` (or, for compatibility, libsysconfcpus'
//! `LIBSYSCONFCPUS` and Noah's `CONTAINER_CORE_LIMIT`), it answers:
//!
//! * `sysconf(_SC_NPROCESSORS_ONLN)` and `get_nprocs()`: `min(N, real)`, the
//!   real online count read once when the library loads (glibc reads `/sys`
//!   on every call, about 5 µs; CPU hotplug after start is not seen);
//! * `sched_getaffinity()` (for any pid: processes of one container share its
//!   limit) and `pthread_getaffinity_np()`: the real mask trimmed to `N` of
//!   its allowed CPUs, taken in order from a per-container starting point
//!   (the spread offset below), so self-pinning programs in different
//!   containers over one shared pool do not all land on its lowest CPUs
//!   (glibc's `nproc`, Python's `os.sched_getaffinity`, Java and Rust's
//!   `available_parallelism` decide by these);
//! * `_SC_NPROCESSORS_CONF` and `get_nprocs_conf()`: the real value, on
//!   purpose. They mean "CPUs configured in the system", and the JVM (and
//!   glibc's `CPU_ALLOC` users) size affinity buffers from them; a low value
//!   on a big host makes `sched_getaffinity` fail with EINVAL. So
//!   `nproc --all` still prints the host's count.
//!
//! **Live updates.** When `BERTH_NPROC_FILE` names a count file (the runtime
//! bind-mounts one per container and rewrites it on `update`), the library
//! maps it read-only at load time and every call reads the count from the
//! mapping: one load, no system call, async-signal-safe. The file is 16
//! bytes: the magic `BERTHCPU`, the count and the spread offset as native
//! 32-bit integers; the runtime stores each with an atomic write into a
//! shared mapping of the same file, so a reader never sees a torn value. A
//! count of 0 in the file means pass-through. Without the file (or with a bad
//! one) the environment decides, as below, and the offset is 0.
//!
//! A fractional `N` rounds up. Unset, empty, zero, negative, non-numeric or
//! absurd (over 2^20) values mean pass-through: every answer is exactly as
//! without the library. `BERTH_NPROC_WARN=1` prints a warning on stderr for a
//! value that is ignored.
//!
//! Portability: the library is `#![no_std]` and imports only `dlsym`,
//! `getenv`, `write`, `open`, `read`, `mmap`, `close` and `abort`, each
//! pinned to the architecture's base symbol version (GLIBC_2.2.5 on x86-64,
//! GLIBC_2.17 on aarch64), so it loads on glibc 2.17 and later; it links
//! `libdl.so.2` for glibc before 2.34, which musl's loader maps to itself,
//! and all of them exist in musl. The call path does no allocation and takes no
//! lock: an atomic load and a call through a pointer resolved at load time,
//! so it is safe from any thread and from signal handlers.
//!
//! Not covered: statically linked programs and Go (raw syscalls); the runtime
//! sets `GOMAXPROCS` for Go.

#![no_std]

use core::ffi::{c_char, c_int, c_long, c_void};
use core::sync::atomic::{AtomicI32, AtomicPtr, AtomicU32, AtomicUsize, Ordering};

const SC_NPROCESSORS_ONLN: c_int = 84;
const RTLD_NEXT: *mut c_void = -1isize as *mut c_void;
const MAX_N: u64 = 1 << 20;

#[link(name = "c")]
extern "C" {
    fn dlsym(handle: *mut c_void, symbol: *const c_char) -> *mut c_void;
    fn getenv(name: *const c_char) -> *const c_char;
    fn write(fd: c_int, buf: *const c_void, count: usize) -> isize;
    fn open(path: *const c_char, flags: c_int, ...) -> c_int;
    fn read(fd: c_int, buf: *mut c_void, count: usize) -> isize;
    fn mmap(
        addr: *mut c_void,
        len: usize,
        prot: c_int,
        flags: c_int,
        fd: c_int,
        off: i64,
    ) -> *mut c_void;
    fn close(fd: c_int) -> c_int;
    fn abort() -> !;
}

// Pin every import to the architecture's base version: a default link
// against a new glibc would import e.g. dlsym@GLIBC_2.34, which older images
// lack. (musl's loader ignores symbol versions.)
macro_rules! pin_imports {
    ($version:literal) => {
        core::arch::global_asm!(
            concat!(".symver dlsym, dlsym@", $version),
            concat!(".symver getenv, getenv@", $version),
            concat!(".symver write, write@", $version),
            concat!(".symver open, open@", $version),
            concat!(".symver read, read@", $version),
            concat!(".symver mmap, mmap@", $version),
            concat!(".symver close, close@", $version),
            concat!(".symver abort, abort@", $version),
        );
    };
}
#[cfg(target_arch = "x86_64")]
pin_imports!("GLIBC_2.2.5");
#[cfg(target_arch = "aarch64")]
pin_imports!("GLIBC_2.17");

#[panic_handler]
fn panic(_: &core::panic::PanicInfo) -> ! {
    // Nothing here can panic; should it ever, never unwind into (or hang)
    // the host program: end it as a failed assertion would.
    // SAFETY: abort(3) takes no arguments and never returns.
    unsafe { abort() }
}

/// The count file's magic (see the crate docs).
const FILE_MAGIC: &[u8; 8] = b"BERTHCPU";
const O_RDONLY_CLOEXEC: c_int = 0o2_000_000;
const PROT_READ: c_int = 1;
const MAP_SHARED: c_int = 1;
const MAP_FAILED: *mut c_void = !0usize as *mut c_void;

/// The mapped count file: the count at word 2, the spread offset at word 3
/// (null: no file).
static MAPPED: AtomicPtr<AtomicU32> = AtomicPtr::new(core::ptr::null_mut());

/// Maps the count file `BERTH_NPROC_FILE` names, if it is one.
fn map_count_file() {
    // SAFETY: getenv with a static C string; open/read/mmap/close on our own
    // descriptor; the mapping is 16 readable bytes of a file that has them
    // (checked by the read), which the runtime never truncates.
    unsafe {
        let path = getenv(c"BERTH_NPROC_FILE".as_ptr());
        if path.is_null() || *path == 0 {
            return;
        }
        let fd = open(path, O_RDONLY_CLOEXEC);
        if fd < 0 {
            warn(
                b"libberth_cpus: BERTH_NPROC_FILE cannot be opened; the count is fixed at start\n",
            );
            return;
        }
        let mut head = [0u8; 16];
        let ok = read(fd, head.as_mut_ptr().cast(), head.len()) == 16 && &head[..8] == FILE_MAGIC;
        let p = if ok {
            mmap(core::ptr::null_mut(), 16, PROT_READ, MAP_SHARED, fd, 0)
        } else {
            MAP_FAILED
        };
        close(fd);
        if p == MAP_FAILED || p.is_null() {
            warn(b"libberth_cpus: BERTH_NPROC_FILE is not a Berth count file; the count is fixed at start\n");
            return;
        }
        MAPPED.store(p.cast(), Ordering::Relaxed);
    }
}

/// The count in the mapped file (None: no file): 0 or absurd is pass-through.
#[inline]
fn mapped_word(i: usize) -> Option<u32> {
    let p = MAPPED.load(Ordering::Relaxed);
    if p.is_null() {
        return None;
    }
    // SAFETY: p maps 16 bytes (4 words), aligned to a page.
    Some(unsafe { (*p.add(i)).load(Ordering::Relaxed) })
}

/// -1: not read yet; 0: pass-through; N > 0: the count to report.
static LIMIT: AtomicI32 = AtomicI32::new(-1);
/// The real online CPU count, cached on first use (0: not read yet).
static REAL_ONLINE: AtomicI32 = AtomicI32::new(0);

/// Parses a CPU count: digits with an optional fraction, rounded up.
/// None for anything else, for zero and for absurd values.
fn parse_count(s: &[u8]) -> Option<u32> {
    let s = trim(s);
    let (int, frac) = match s.iter().position(|&b| b == b'.') {
        Some(i) => (&s[..i], &s[i + 1..]),
        None => (s, &s[s.len()..]),
    };
    if int.is_empty() || !int.iter().all(u8::is_ascii_digit) || !frac.iter().all(u8::is_ascii_digit)
    {
        return None;
    }
    let mut n: u64 = 0;
    for &d in int {
        n = n.checked_mul(10)?.checked_add(u64::from(d - b'0'))?;
        if n > MAX_N {
            return None;
        }
    }
    if frac.iter().any(|&d| d != b'0') {
        n += 1;
    }
    if n == 0 || n > MAX_N {
        return None;
    }
    u32::try_from(n).ok()
}

fn trim(mut s: &[u8]) -> &[u8] {
    while let [first, rest @ ..] = s {
        if !first.is_ascii_whitespace() {
            break;
        }
        s = rest;
    }
    while let [rest @ .., last] = s {
        if !last.is_ascii_whitespace() {
            break;
        }
        s = rest;
    }
    s
}

/// # Safety
/// `p` is null or a NUL-terminated string.
unsafe fn cstr<'a>(p: *const c_char) -> Option<&'a [u8]> {
    if p.is_null() {
        return None;
    }
    let mut len = 0;
    while *p.add(len) != 0 {
        len += 1;
    }
    Some(core::slice::from_raw_parts(p.cast::<u8>(), len))
}

fn warn(msg: &[u8]) {
    // SAFETY: getenv with a static C string; write(2) of a valid buffer.
    unsafe {
        if cstr(getenv(c"BERTH_NPROC_WARN".as_ptr())).is_some_and(|v| v == b"1") {
            write(2, msg.as_ptr().cast(), msg.len());
        }
    }
}

fn read_limit() -> i32 {
    for var in [c"BERTH_NPROC", c"LIBSYSCONFCPUS", c"CONTAINER_CORE_LIMIT"] {
        // SAFETY: getenv with a static C string returns null or a C string.
        let Some(v) = (unsafe { cstr(getenv(var.as_ptr())) }) else {
            continue;
        };
        if trim(v).is_empty() {
            continue;
        }
        return match parse_count(v) {
            Some(n) => n as i32,
            None => {
                warn(b"libberth_cpus: ignoring a CPU count that is not a positive number; reporting the real count\n");
                0
            }
        };
    }
    0
}

#[inline]
fn limit() -> i32 {
    if let Some(n) = mapped_word(2) {
        return if u64::from(n) <= MAX_N { n as i32 } else { 0 };
    }
    let v = LIMIT.load(Ordering::Relaxed);
    if v >= 0 {
        return v;
    }
    let v = read_limit();
    LIMIT.store(v, Ordering::Relaxed);
    v
}

/// A lazily resolved pointer to the next definition of a libc function.
struct Real {
    name: &'static core::ffi::CStr,
    addr: AtomicUsize,
}

impl Real {
    const fn new(name: &'static core::ffi::CStr) -> Real {
        Real {
            name,
            addr: AtomicUsize::new(0),
        }
    }

    fn get(&self) -> usize {
        let a = self.addr.load(Ordering::Relaxed);
        if a != 0 {
            return a;
        }
        // SAFETY: dlsym with RTLD_NEXT and a static C string.
        let a = unsafe { dlsym(RTLD_NEXT, self.name.as_ptr()) } as usize;
        self.addr.store(a, Ordering::Relaxed);
        a
    }
}

static REAL_SYSCONF: Real = Real::new(c"sysconf");
static REAL_GET_NPROCS: Real = Real::new(c"get_nprocs");
static REAL_SCHED_GETAFFINITY: Real = Real::new(c"sched_getaffinity");
static REAL_PTHREAD_GETAFFINITY: Real = Real::new(c"pthread_getaffinity_np");

/// Runs at load time: resolves the real functions and reads the environment
/// (and, with a limit, the real online count), so later calls from any thread
/// or signal handler only load atomics.
extern "C" fn berth_init() {
    for r in [
        &REAL_SYSCONF,
        &REAL_GET_NPROCS,
        &REAL_SCHED_GETAFFINITY,
        &REAL_PTHREAD_GETAFFINITY,
    ] {
        r.get();
    }
    map_count_file();
    if limit() > 0 {
        real_online();
    }
}

fn call_real_sysconf(name: c_int) -> c_long {
    let f = REAL_SYSCONF.get();
    if f == 0 {
        return -1;
    }
    // SAFETY: f is libc's sysconf.
    unsafe { core::mem::transmute::<usize, extern "C" fn(c_int) -> c_long>(f)(name) }
}

/// The real online CPU count, read once.
fn real_online() -> c_long {
    let v = REAL_ONLINE.load(Ordering::Relaxed);
    if v > 0 {
        return c_long::from(v);
    }
    let r = call_real_sysconf(SC_NPROCESSORS_ONLN);
    if r > 0 {
        REAL_ONLINE.store(i32::try_from(r).unwrap_or(i32::MAX), Ordering::Relaxed);
    }
    r
}

#[used]
#[link_section = ".init_array"]
static INIT: extern "C" fn() = berth_init;

fn clamp(real: c_long, n: i32) -> c_long {
    if n > 0 && (real <= 0 || real > c_long::from(n)) {
        c_long::from(n)
    } else {
        real
    }
}

/// Keeps `n` of the set bits of `mask`: in order from the `skip % ones`-th
/// set bit, wrapping around, so different offsets spread over the mask.
/// Word-wise: a mask is mostly zero words, skipped with one test each.
///
/// # Safety
/// `mask` points to `size` writable bytes.
unsafe fn trim_mask(mask: *mut u8, size: usize, n: i32, skip: u32) {
    let words = size / 8;
    let word = |i: usize| mask.cast::<u64>().add(i);
    let mut ones = 0u32;
    for i in 0..words {
        ones += word(i).read_unaligned().count_ones();
    }
    for i in words * 8..size {
        ones += (*mask.add(i)).count_ones();
    }
    let n = n as u32;
    if ones <= n {
        return;
    }
    let start = skip % ones;
    // Set bit k (in order) is kept when (k - start) mod ones < n.
    let mut k = 0u32;
    let mut keep = |mut w: u64| -> u64 {
        let mut kept = 0u64;
        while w != 0 {
            let low = w & w.wrapping_neg();
            w &= !low;
            let rank = if k >= start {
                k - start
            } else {
                k + ones - start
            };
            if rank < n {
                kept |= low;
            }
            k += 1;
        }
        kept
    };
    for i in 0..words {
        let w = word(i).read_unaligned();
        if w != 0 {
            word(i).write_unaligned(keep(w));
        }
    }
    for i in words * 8..size {
        let p = mask.add(i);
        if *p != 0 {
            *p = keep(u64::from(*p)) as u8;
        }
    }
}

/// The spread offset: the count file's, else 0 (the first `N` CPUs).
fn spread() -> u32 {
    mapped_word(3).unwrap_or(0)
}

/// `sysconf(3)`: `_SC_NPROCESSORS_ONLN` reports at most N; all else is real.
#[no_mangle]
pub extern "C" fn sysconf(name: c_int) -> c_long {
    if name == SC_NPROCESSORS_ONLN {
        let n = limit();
        if n > 0 {
            return clamp(real_online(), n);
        }
    }
    call_real_sysconf(name)
}

/// `get_nprocs(3)`: at most N.
#[no_mangle]
pub extern "C" fn get_nprocs() -> c_int {
    let n = limit();
    if n > 0 {
        return clamp(real_online(), n) as c_int;
    }
    let f = REAL_GET_NPROCS.get();
    if f == 0 {
        return -1;
    }
    // SAFETY: f is libc's get_nprocs.
    unsafe { core::mem::transmute::<usize, extern "C" fn() -> c_int>(f)() }
}

/// `sched_getaffinity(2)`: the real mask trimmed to N CPUs.
///
/// # Safety
/// As for libc's `sched_getaffinity`: `mask` points to `size` writable bytes.
#[no_mangle]
pub unsafe extern "C" fn sched_getaffinity(pid: c_int, size: usize, mask: *mut c_void) -> c_int {
    let f = REAL_SCHED_GETAFFINITY.get();
    if f == 0 {
        return -1;
    }
    let real =
        core::mem::transmute::<usize, unsafe extern "C" fn(c_int, usize, *mut c_void) -> c_int>(f);
    let r = real(pid, size, mask);
    let n = limit();
    if r == 0 && n > 0 && !mask.is_null() {
        trim_mask(mask.cast(), size, n, spread());
    }
    r
}

/// `pthread_getaffinity_np(3)`: the real mask trimmed to N CPUs.
///
/// # Safety
/// As for libc's `pthread_getaffinity_np`.
#[no_mangle]
pub unsafe extern "C" fn pthread_getaffinity_np(
    thread: usize,
    size: usize,
    mask: *mut c_void,
) -> c_int {
    let f = REAL_PTHREAD_GETAFFINITY.get();
    if f == 0 {
        return 38; // ENOSYS
    }
    let real =
        core::mem::transmute::<usize, unsafe extern "C" fn(usize, usize, *mut c_void) -> c_int>(f);
    let r = real(thread, size, mask);
    let n = limit();
    if r == 0 && n > 0 && !mask.is_null() {
        trim_mask(mask.cast(), size, n, spread());
    }
    r
}
