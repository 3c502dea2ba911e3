//! CNI error results: `{"cniVersion", "code", "msg", "details"}` on stdout.
//!
//! Inside, each concern has its own error enum ([`crate::env::EnvError`],
//! [`crate::types::ConfError`], [`crate::ipam::IpamError`], ...), and each
//! says through [`Failure`] which code it is answered with. Only the skel
//! turns one into the wire type [`CniError`], as Go's `skel` does.

use serde::Serialize;

/// The spec's well-known error codes (plugin-specific ones are 100 and up).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Code {
    /// 1: incompatible CNI version.
    IncompatibleVersion,
    /// 2: unsupported field in the network configuration.
    UnsupportedField,
    /// 3: container unknown or does not exist.
    UnknownContainer,
    /// 4: invalid necessary environment variables.
    InvalidEnv,
    /// 5: I/O failure.
    Io,
    /// 6: failed to decode content.
    Decode,
    /// 7: invalid network configuration.
    InvalidConfig,
    /// 11: try again later.
    TryAgainLater,
    /// 50: the plugin is not available (STATUS).
    NotAvailable,
    /// A plugin-specific code, 100 or more.
    Plugin(u32),
}

impl Code {
    /// The number on the wire.
    pub fn number(self) -> u32 {
        match self {
            Code::IncompatibleVersion => 1,
            Code::UnsupportedField => 2,
            Code::UnknownContainer => 3,
            Code::InvalidEnv => 4,
            Code::Io => 5,
            Code::Decode => 6,
            Code::InvalidConfig => 7,
            Code::TryAgainLater => 11,
            Code::NotAvailable => 50,
            Code::Plugin(n) => n.max(100),
        }
    }

    /// The code a plugin's wire number stands for: the well-known ones, a
    /// plugin's own (100 and up), and anything else as the generic 100.
    pub fn from_number(n: u32) -> Code {
        match n {
            1 => Code::IncompatibleVersion,
            2 => Code::UnsupportedField,
            3 => Code::UnknownContainer,
            4 => Code::InvalidEnv,
            5 => Code::Io,
            6 => Code::Decode,
            7 => Code::InvalidConfig,
            11 => Code::TryAgainLater,
            50 => Code::NotAvailable,
            n if n >= 100 => Code::Plugin(n),
            _ => Code::Plugin(100),
        }
    }
}

/// A CNI error: what a plugin prints on stdout (and exits non-zero) on failure.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{msg}{}", details.as_ref().map(|d| format!(": {d}")).unwrap_or_default())]
pub struct CniError {
    /// Its code.
    pub code: Code,
    /// A short message naming the offending key or condition.
    pub msg: String,
    /// Longer details, if any.
    pub details: Option<String>,
}

/// An error a plugin can answer with: the CNI code of each case, and what
/// goes in `msg` (its `Display`, unless said otherwise) and `details`.
pub trait Failure: std::error::Error {
    /// The code it is answered with.
    fn code(&self) -> Code;
    /// `msg`: short, naming the offending key or condition.
    fn message(&self) -> String {
        self.to_string()
    }
    /// `details`, if any (e.g. the kernel's or a delegate's own words).
    fn details(&self) -> Option<String> {
        None
    }
}

impl<F: Failure + ?Sized> From<&F> for CniError {
    /// The wire form of `e`.
    fn from(e: &F) -> CniError {
        CniError {
            code: e.code(),
            msg: e.message(),
            details: e.details(),
        }
    }
}

#[derive(Serialize)]
struct Wire<'a> {
    #[serde(rename = "cniVersion")]
    cni_version: &'a str,
    code: u32,
    msg: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    details: Option<&'a str>,
}

impl CniError {
    /// An error with `code` and `msg`.
    pub fn new(code: Code, msg: impl Into<String>) -> CniError {
        CniError {
            code,
            msg: msg.into(),
            details: None,
        }
    }

    /// The same error with `details`.
    pub fn with_details(mut self, details: impl Into<String>) -> CniError {
        self.details = Some(details.into());
        self
    }

    /// The error JSON for a config of `cni_version`.
    pub fn to_json(&self, cni_version: &str) -> String {
        serde_json::to_string(&Wire {
            cni_version,
            code: self.code.number(),
            msg: &self.msg,
            details: self.details.as_deref(),
        })
        .unwrap_or_else(|_| format!("{{\"code\":{},\"msg\":\"error\"}}", self.code.number()))
    }
}

/// Changing or checking links, addresses, routes and qdiscs in a netns.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    /// The kernel refused (code 5).
    #[error(transparent)]
    Netlink(#[from] crate::netlink::NetlinkError),
    /// The result to configure does not decode (code 6).
    #[error(transparent)]
    Result(#[from] crate::types::ResultError),
    /// CHECK found it other than the result or config says (code 101).
    #[error("{0}")]
    Mismatch(String),
    /// A link this operation made or found a moment ago is gone (code 5).
    #[error("{0} vanished")]
    Vanished(String),
}

impl Failure for LinkError {
    fn code(&self) -> Code {
        match self {
            LinkError::Netlink(e) => e.code(),
            LinkError::Result(e) => e.code(),
            LinkError::Mismatch(_) => Code::Plugin(101),
            LinkError::Vanished(_) => Code::Io,
        }
    }

    fn message(&self) -> String {
        match self {
            LinkError::Netlink(e) => e.message(),
            e => e.to_string(),
        }
    }

    fn details(&self) -> Option<String> {
        match self {
            LinkError::Netlink(e) => e.details(),
            LinkError::Result(e) => e.details(),
            _ => None,
        }
    }
}

/// Any of this library's errors: what a plugin's own error enum wraps as
/// one variant (see [`crate::wraps_cni_errors`]).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The `CNI_*` environment.
    #[error(transparent)]
    Env(#[from] crate::env::EnvError),
    /// The network configuration.
    #[error(transparent)]
    Conf(#[from] crate::types::ConfError),
    /// A result (an IPAM plugin's, `prevResult`).
    #[error(transparent)]
    Result(#[from] crate::types::ResultError),
    /// The IPAM plugin.
    #[error(transparent)]
    Ipam(#[from] crate::ipam::IpamError),
    /// Entering the netns.
    #[error(transparent)]
    Netns(#[from] crate::netns::NetnsError),
    /// One netlink request.
    #[error(transparent)]
    Netlink(#[from] crate::netlink::NetlinkError),
    /// Links, addresses, routes and qdiscs.
    #[error(transparent)]
    Link(#[from] LinkError),
    /// The attachment records.
    #[error(transparent)]
    Ledger(#[from] crate::attachments::LedgerError),
    /// Bandwidth shares on a link.
    #[error(transparent)]
    Share(#[from] crate::share::ShareError),
}

impl Error {
    fn inner(&self) -> &dyn Failure {
        match self {
            Error::Env(e) => e,
            Error::Conf(e) => e,
            Error::Result(e) => e,
            Error::Ipam(e) => e,
            Error::Netns(e) => e,
            Error::Netlink(e) => e,
            Error::Link(e) => e,
            Error::Ledger(e) => e,
            Error::Share(e) => e,
        }
    }
}

impl Failure for Error {
    fn code(&self) -> Code {
        self.inner().code()
    }

    fn message(&self) -> String {
        self.inner().message()
    }

    fn details(&self) -> Option<String> {
        self.inner().details()
    }
}

/// For a plugin's error enum `$t` with a variant `Cni(#[from]
/// berth_cni::Error)`: `From` for each error type [`Error`] wraps, so `?`
/// takes any of them.
#[macro_export]
macro_rules! wraps_cni_errors {
    ($t:ty) => {
        $crate::wraps_cni_errors!(@each $t:
            $crate::env::EnvError,
            $crate::types::ConfError,
            $crate::types::ResultError,
            $crate::ipam::IpamError,
            $crate::netns::NetnsError,
            $crate::netlink::NetlinkError,
            $crate::error::LinkError,
            $crate::attachments::LedgerError,
            $crate::share::ShareError
        );
    };
    (@each $t:ty: $($e:ty),*) => {
        $(
            impl From<$e> for $t {
                fn from(e: $e) -> Self {
                    Self::Cni($crate::Error::from(e))
                }
            }
        )*
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_format() {
        let e = CniError::new(Code::InvalidConfig, "master \"nope\" not found")
            .with_details("no such link");
        let v: serde_json::Value = serde_json::from_str(&e.to_json("1.0.0")).unwrap();
        assert_eq!(v["code"], 7);
        assert_eq!(v["cniVersion"], "1.0.0");
        assert_eq!(v["msg"], "master \"nope\" not found");
        assert_eq!(v["details"], "no such link");
        assert_eq!(Code::Plugin(3).number(), 100);
        assert_eq!(Code::TryAgainLater.number(), 11);
    }

    /// Every code a plugin can send comes back as itself, 50 included (an
    /// IPAM's STATUS "not available" is not a generic failure).
    #[test]
    fn wire_numbers_round_trip() {
        for n in [1, 2, 3, 4, 5, 6, 7, 11, 50, 100, 101, 999] {
            assert_eq!(Code::from_number(n).number(), n, "{n}");
        }
        assert_eq!(Code::from_number(50), Code::NotAvailable);
        assert_eq!(Code::from_number(42), Code::Plugin(100));
    }
}
