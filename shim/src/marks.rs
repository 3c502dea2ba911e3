//! Berth's marks on its own work, which input cannot forge.
//!
//! Berth records what it did in a container's spec (the applied record, the
//! cgroup path it filled in), so a second create of the same bundle is
//! idempotent. Those annotations arrive again as input, and input may come
//! from a tenant: a pod can set any annotation. So Berth takes a record as
//! its own only when it carries a valid mark: an HMAC-SHA256, under a key
//! that only this host's Berth can read, of the bundle's path, the record's
//! name and its value. Anything else is input like any other annotation.
//!
//! The key is 32 random bytes in `<state_dir>/mark.key` (0600), made once,
//! by whichever Berth process gets there first (written aside, then linked
//! into place, so no reader sees half a key). `state_dir` is on a tmpfs on
//! production hosts, so marks do not outlive a reboot; neither do bundles.

use crate::error::{Error, Result};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::io::Read;
use std::path::Path;

/// The key file under `state_dir`.
pub const KEY_FILE: &str = "mark.key";

/// The host's mark key.
pub struct Marks {
    key: [u8; 32],
}

impl Marks {
    /// Loads the key from `state_dir`, making it first if there is none.
    pub fn open(state_dir: &Path) -> Result<Marks> {
        let path = state_dir.join(KEY_FILE);
        if let Some(m) = Self::read(&path)? {
            return Ok(m);
        }
        std::fs::create_dir_all(state_dir).map_err(|e| Error::io(state_dir, e))?;
        let mut key = [0u8; 32];
        std::fs::File::open("/dev/urandom")
            .and_then(|mut f| f.read_exact(&mut key))
            .map_err(|e| Error::io("/dev/urandom", e))?;
        let tmp = state_dir.join(format!(".{KEY_FILE}.{}", std::process::id()));
        crate::atomic::write_file(&tmp, &key, 0o600, crate::atomic::Durability::Durable)?;
        // Whoever links first wins; everyone then uses the key in place.
        let linked = std::fs::hard_link(&tmp, &path);
        let _ = std::fs::remove_file(&tmp);
        match linked {
            Ok(()) => Ok(Marks { key }),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Self::read(&path)?
                .ok_or_else(|| Error::io(&path, std::io::ErrorKind::NotFound.into())),
            Err(e) => Err(Error::io(&path, e)),
        }
    }

    fn read(path: &Path) -> Result<Option<Marks>> {
        match std::fs::read(path) {
            Ok(b) if b.len() == 32 => {
                let mut key = [0u8; 32];
                key.copy_from_slice(&b);
                Ok(Some(Marks { key }))
            }
            Ok(_) => Err(Error::Config {
                path: path.to_path_buf(),
                message: "the mark key must be 32 bytes; remove it to make a new one".into(),
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::io(path, e)),
        }
    }

    /// A key for tests.
    pub fn with_key(key: [u8; 32]) -> Marks {
        Marks { key }
    }

    fn mac(&self, bundle: &Path, name: &str, value: &str) -> Hmac<Sha256> {
        let mut m = <Hmac<Sha256> as Mac>::new_from_slice(&self.key).expect("any key length");
        for part in [
            bundle.as_os_str().as_encoded_bytes(),
            name.as_bytes(),
            value.as_bytes(),
        ] {
            m.update(&(part.len() as u64).to_le_bytes());
            m.update(part);
        }
        m
    }

    /// The mark of record `name` with `value` for `bundle`, in hex.
    pub fn sign(&self, bundle: &Path, name: &str, value: &str) -> String {
        let tag = self.mac(bundle, name, value).finalize().into_bytes();
        tag.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// Whether `mark` is this host's mark of record `name` with `value` for `bundle`.
    pub fn verify(&self, bundle: &Path, name: &str, value: &str, mark: &str) -> bool {
        let Some(bytes) = unhex(mark) else {
            return false;
        };
        self.mac(bundle, name, value).verify_slice(&bytes).is_ok()
    }
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_mark_holds_only_for_its_bundle_name_and_value() {
        let m = Marks::with_key([7; 32]);
        let b = Path::new("/run/b1");
        let mark = m.sign(b, "applied", "{\"cpu\":1}");
        assert!(m.verify(b, "applied", "{\"cpu\":1}", &mark));
        assert!(!m.verify(b, "applied", "{\"cpu\":32}", &mark));
        assert!(!m.verify(Path::new("/run/b2"), "applied", "{\"cpu\":1}", &mark));
        assert!(!m.verify(b, "cgroup", "{\"cpu\":1}", &mark));
        assert!(!m.verify(b, "applied", "{\"cpu\":1}", "not hex"));
        assert!(!Marks::with_key([8; 32]).verify(b, "applied", "{\"cpu\":1}", &mark));
    }

    #[test]
    fn the_key_is_made_once_and_kept_private() {
        use std::os::unix::fs::PermissionsExt;
        let d = tempfile::tempdir().unwrap();
        let a = Marks::open(d.path()).unwrap();
        let b = Marks::open(d.path()).unwrap();
        assert_eq!(a.key, b.key);
        let mode = std::fs::metadata(d.path().join(KEY_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        std::fs::write(d.path().join(KEY_FILE), b"short").unwrap();
        assert!(Marks::open(d.path()).is_err());
    }
}
