//! Guaranteed, borrowable, prioritised bandwidth on a shared link, after
//! Tencent's Gaia: each attachment gets a guaranteed rate it always has
//! under contention, may borrow idle bandwidth up to a ceiling, and has a
//! priority (0 first … 7 last) deciding who borrows first and whose
//! packets wait least.
//!
//! * **Where.** Traffic leaving through the link goes through an HTB tree
//!   `be00:` at the link's root; traffic arriving goes through the same tree
//!   on an ifb (`bsi<hash>`), fed by the link's ingress (macvlan) or by the
//!   egress of each attachment's own port (OVS). `be00:1` holds the link's
//!   capacity, `be00:2` the host's share (and every frame no attachment
//!   claims), `be00:<minor>` one attachment, classified by its MAC.
//! * **Admission.** The guarantees on a link, plus the host's share, never
//!   exceed its capacity; a request beyond is refused naming what is
//!   guaranteed and what is left.
//! * **State.** A book per link (`<state_dir>/share/<link>.json`), changed
//!   only under an exclusive `flock` and only after the kernel holds what it
//!   records. Each operation first reconciles the kernel with the book:
//!   classes no entry owns go (a crash after applying, before committing),
//!   entries whose classes vanished are applied again while their
//!   attachment lives, and dropped when it does not.
//!
//! The kernel side is behind [`Tree`], so the model is tested against a fake.

use crate::attachments::{locked, write_durably, Access};
use crate::check::mismatch;
use crate::env::Env;
use crate::error::{Code, Failure, LinkError};
use crate::htb::ClassSpec;
use crate::types::{keys, ConfError, NetConf};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The class of the host's share and of unclaimed traffic.
pub const HOST_MINOR: u16 = 2;
/// The link's root class.
pub const ROOT_MINOR: u16 = 1;
/// The first minor given to an attachment.
pub const FIRST_MINOR: u16 = 0x10;
/// The last one (u32 filter nodes have 12 bits).
pub const LAST_MINOR: u16 = 0xfff;
/// Priorities run from 0 (first) to this.
pub const LOWEST_PRIORITY: u8 = 7;
/// The priority of an attachment that asks for none.
pub const DEFAULT_PRIORITY: u8 = 4;
/// The host's share when the configuration names none: this fraction of
/// the link (in percent).
pub const DEFAULT_HOST_PERCENT: u64 = 5;
/// The smallest class rate HTB is given (bits/s): a borrower with no
/// guarantee still needs one.
const MIN_CLASS_RATE: u64 = 8_000;

/// A value per direction: `egress` leaves the container, `ingress` reaches it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Dir<T> {
    /// From the container.
    pub egress: T,
    /// To the container.
    pub ingress: T,
}

impl<T: Copy> Dir<T> {
    fn both(v: T) -> Dir<T> {
        Dir {
            egress: v,
            ingress: v,
        }
    }
}

/// A rate in a configuration: one number for both directions, or each.
#[derive(Deserialize)]
#[serde(untagged)]
enum RateKey {
    Both(u64),
    Each(EachKey),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EachKey {
    egress: Option<u64>,
    ingress: Option<u64>,
}

impl RateKey {
    fn dir(&self) -> Dir<Option<u64>> {
        match self {
            RateKey::Both(v) => Dir::both(Some(*v)),
            RateKey::Each(e) => Dir {
                egress: e.egress,
                ingress: e.ingress,
            },
        }
    }
}

/// `bandwidthShare` in the network configuration: the admin's.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct ShareKeys {
    link_rate: Option<RateKey>,
    host_share: Option<RateKey>,
    top_priority: Option<u8>,
    guarantee: Option<RateKey>,
    ceiling: Option<RateKey>,
    priority: Option<u8>,
}

/// Berth's keys in `runtimeConfig.bandwidth` (the CNI `bandwidth`
/// capability's own keys are read by [`crate::qos`]).
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RuntimeShareKeys {
    berth_egress_guarantee: Option<u64>,
    berth_ingress_guarantee: Option<u64>,
    berth_egress_ceiling: Option<u64>,
    berth_ingress_ceiling: Option<u64>,
    berth_priority: Option<u8>,
}

/// A value and the key it came from, for errors.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Keyed<T> {
    /// The value.
    pub value: T,
    /// Where it was set.
    pub key: String,
}

fn keyed<T>(value: T, key: impl Into<String>) -> Keyed<T> {
    Keyed {
        value,
        key: key.into(),
    }
}

/// What a network configuration (and the runtime and `CNI_ARGS`) ask of
/// the shared link, before the link's capacity is known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShareConf {
    /// `bandwidthShare.linkRate` (bits/s); `None`: read from the link.
    pub link_rate: Dir<Option<u64>>,
    /// `bandwidthShare.hostShare` (bits/s); `None`: 5 % of the link.
    pub host_share: Dir<Option<u64>>,
    /// `bandwidthShare.topPriority`: the most urgent priority a request
    /// may take (default 0).
    pub top_priority: u8,
    /// The guarantee asked for, bits/s (default 0).
    pub guarantee: Dir<Keyed<u64>>,
    /// The ceiling asked for, bits/s (`None`: the link).
    pub ceiling: Dir<Option<Keyed<u64>>>,
    /// The priority asked for.
    pub priority: Keyed<u8>,
}

fn arg_u64(env: &Env, name: &str) -> Result<Option<Keyed<u64>>, ConfError> {
    match env.args.get(name).filter(|v| !v.is_empty()) {
        None => Ok(None),
        Some(v) => {
            let key = format!("CNI_ARGS {name}");
            let n = v.parse::<u64>().map_err(|_| {
                ConfError::invalid(key.clone(), format!("{v:?} is not a whole number"))
            })?;
            Ok(Some(keyed(n, key)))
        }
    }
}

impl ShareConf {
    /// Reads `bandwidthShare`, Berth's keys in `runtimeConfig.bandwidth`
    /// and `CNI_ARGS` (`BERTH_EGRESS_GUARANTEE`, `BERTH_INGRESS_GUARANTEE`,
    /// `BERTH_EGRESS_CEILING`, `BERTH_INGRESS_CEILING`, `BERTH_PRIORITY`),
    /// each overriding the one before. `None` when the network has no
    /// `bandwidthShare`; asking for a share there is an error.
    pub fn parse(conf: &NetConf, env: &Env) -> Result<Option<ShareConf>, ConfError> {
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Top {
            bandwidth_share: Option<Value>,
        }
        #[derive(Deserialize)]
        struct Rt {
            bandwidth: Option<Value>,
        }
        let top: Top = conf.keys()?;
        let rt: Rt = keys(&Value::Object(conf.runtime_config.clone()), "runtimeConfig")?;
        let rk: Option<RuntimeShareKeys> = rt
            .bandwidth
            .as_ref()
            .map(|v| keys(v, "runtimeConfig.bandwidth"))
            .transpose()?;
        let arg_names = [
            "BERTH_EGRESS_GUARANTEE",
            "BERTH_INGRESS_GUARANTEE",
            "BERTH_EGRESS_CEILING",
            "BERTH_INGRESS_CEILING",
            "BERTH_PRIORITY",
        ];
        let Some(sv) = top.bandwidth_share else {
            let asked_rt = rk.as_ref().is_some_and(|k| {
                k.berth_egress_guarantee.is_some()
                    || k.berth_ingress_guarantee.is_some()
                    || k.berth_egress_ceiling.is_some()
                    || k.berth_ingress_ceiling.is_some()
                    || k.berth_priority.is_some()
            });
            if let Some(n) = arg_names.iter().find(|n| env.args.contains_key(**n)) {
                return Err(ConfError::invalid(
                    format!("CNI_ARGS {n}"),
                    "asks for a bandwidth share but the network has no bandwidthShare",
                ));
            }
            if asked_rt {
                return Err(ConfError::invalid(
                    "runtimeConfig.bandwidth",
                    "asks for a bandwidth share (berth* keys) but the network has no bandwidthShare",
                ));
            }
            return Ok(None);
        };
        let k: ShareKeys = keys(&sv, "bandwidthShare")?;
        let none = Dir::both(None);
        let dir_of = |r: &Option<RateKey>| r.as_ref().map(RateKey::dir).unwrap_or(none);
        let g = dir_of(&k.guarantee);
        let c = dir_of(&k.ceiling);
        let mut guarantee = Dir {
            egress: keyed(g.egress.unwrap_or(0), "bandwidthShare.guarantee.egress"),
            ingress: keyed(g.ingress.unwrap_or(0), "bandwidthShare.guarantee.ingress"),
        };
        let mut ceiling = Dir {
            egress: c.egress.map(|v| keyed(v, "bandwidthShare.ceiling.egress")),
            ingress: c
                .ingress
                .map(|v| keyed(v, "bandwidthShare.ceiling.ingress")),
        };
        let mut priority = keyed(
            k.priority.unwrap_or(DEFAULT_PRIORITY),
            "bandwidthShare.priority",
        );
        // CNI_ARGS, then runtimeConfig.
        if let Some(v) = arg_u64(env, "BERTH_EGRESS_GUARANTEE")? {
            guarantee.egress = v;
        }
        if let Some(v) = arg_u64(env, "BERTH_INGRESS_GUARANTEE")? {
            guarantee.ingress = v;
        }
        if let Some(v) = arg_u64(env, "BERTH_EGRESS_CEILING")? {
            ceiling.egress = Some(v);
        }
        if let Some(v) = arg_u64(env, "BERTH_INGRESS_CEILING")? {
            ceiling.ingress = Some(v);
        }
        if let Some(v) = arg_u64(env, "BERTH_PRIORITY")? {
            let p = u8::try_from(v.value).map_err(|_| {
                ConfError::invalid(
                    v.key.clone(),
                    format!("{} is not a priority (0 first … 7 last)", v.value),
                )
            })?;
            priority = keyed(p, v.key);
        }
        if let Some(r) = rk {
            let at = |k: &str| format!("runtimeConfig.bandwidth.{k}");
            if let Some(v) = r.berth_egress_guarantee {
                guarantee.egress = keyed(v, at("berthEgressGuarantee"));
            }
            if let Some(v) = r.berth_ingress_guarantee {
                guarantee.ingress = keyed(v, at("berthIngressGuarantee"));
            }
            if let Some(v) = r.berth_egress_ceiling {
                ceiling.egress = Some(keyed(v, at("berthEgressCeiling")));
            }
            if let Some(v) = r.berth_ingress_ceiling {
                ceiling.ingress = Some(keyed(v, at("berthIngressCeiling")));
            }
            if let Some(v) = r.berth_priority {
                priority = keyed(v, at("berthPriority"));
            }
        }
        let top_priority = k.top_priority.unwrap_or(0);
        if top_priority > LOWEST_PRIORITY {
            return Err(ConfError::invalid(
                "bandwidthShare.topPriority",
                format!("{top_priority} is not a priority (0 first … 7 last)"),
            ));
        }
        if priority.value > LOWEST_PRIORITY {
            return Err(ConfError::invalid(
                priority.key,
                format!("{} is not a priority (0 first … 7 last)", priority.value),
            ));
        }
        if priority.value < top_priority {
            return Err(ConfError::invalid(
                priority.key,
                format!(
                    "{} is a higher priority than this network allows (bandwidthShare.topPriority {top_priority})",
                    priority.value
                ),
            ));
        }
        Ok(Some(ShareConf {
            link_rate: dir_of(&k.link_rate),
            host_share: dir_of(&k.host_share),
            top_priority,
            guarantee,
            ceiling,
            priority,
        }))
    }

    /// The link's capacity and host share, and this attachment's classes,
    /// for a link whose own speed (bits/s) is `speed` if known. Errors name
    /// the key at fault.
    pub fn resolve(&self, link: &str, speed: Option<u64>) -> Result<Resolved, ConfError> {
        let rate = |v: Option<u64>, d: &str| -> Result<u64, ConfError> {
            match v.or(speed) {
                Some(r) if r >= MIN_CLASS_RATE => Ok(r),
                Some(r) => Err(ConfError::invalid(
                    format!("bandwidthShare.linkRate.{d}"),
                    format!("{r} bit/s is below {MIN_CLASS_RATE}"),
                )),
                None => Err(ConfError::invalid(
                    format!("bandwidthShare.linkRate.{d}"),
                    format!("is required: the speed of {link:?} is unknown (a veth or a virtual link reports none)"),
                )),
            }
        };
        let link_rate = Dir {
            egress: rate(self.link_rate.egress, "egress")?,
            ingress: rate(self.link_rate.ingress, "ingress")?,
        };
        let host = |v: Option<u64>, cap: u64, d: &str| -> Result<u64, ConfError> {
            let h = v.unwrap_or(cap * DEFAULT_HOST_PERCENT / 100);
            if h > cap {
                return Err(ConfError::invalid(
                    format!("bandwidthShare.hostShare.{d}"),
                    format!("{h} bit/s is more than the link's {cap}"),
                ));
            }
            Ok(h.max(MIN_CLASS_RATE))
        };
        let host_share = Dir {
            egress: host(self.host_share.egress, link_rate.egress, "egress")?,
            ingress: host(self.host_share.ingress, link_rate.ingress, "ingress")?,
        };
        let class =
            |g: &Keyed<u64>, c: &Option<Keyed<u64>>, cap: u64| -> Result<Class, ConfError> {
                let ceil = match c {
                    Some(c) if c.value > cap => {
                        return Err(ConfError::invalid(
                            c.key.clone(),
                            format!("{} bit/s is more than the link's {cap}", c.value),
                        ))
                    }
                    Some(c) if c.value < MIN_CLASS_RATE => {
                        return Err(ConfError::invalid(
                            c.key.clone(),
                            format!("{} bit/s is below {MIN_CLASS_RATE}", c.value),
                        ))
                    }
                    Some(c) => c.value,
                    None => cap,
                };
                if g.value > ceil {
                    return Err(ConfError::invalid(
                        g.key.clone(),
                        format!("{} bit/s is over the ceiling of {ceil}", g.value),
                    ));
                }
                Ok(Class {
                    guarantee: g.value,
                    ceiling: ceil,
                })
            };
        Ok(Resolved {
            link_rate,
            host_share,
            egress: class(
                &self.guarantee.egress,
                &self.ceiling.egress,
                link_rate.egress,
            )?,
            ingress: class(
                &self.guarantee.ingress,
                &self.ceiling.ingress,
                link_rate.ingress,
            )?,
            priority: self.priority.value,
        })
    }
}

/// One direction of an attachment, bits/s.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Class {
    /// Always available under contention.
    pub guarantee: u64,
    /// Reachable by borrowing.
    pub ceiling: u64,
}

/// A share with every value known.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Resolved {
    /// The link's capacity.
    pub link_rate: Dir<u64>,
    /// Kept for the host.
    pub host_share: Dir<u64>,
    /// From the container.
    pub egress: Class,
    /// To the container.
    pub ingress: Class,
    /// 0 first … 7 last.
    pub priority: u8,
}

/// The HTB class for `c` at `priority` (rates in bytes/s).
pub fn class_spec(c: &Class, priority: u8) -> ClassSpec {
    ClassSpec {
        rate: c.guarantee.max(MIN_CLASS_RATE) / 8,
        ceil: c.ceiling / 8,
        prio: priority,
    }
}

/// One attachment's share, as the book records it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Entry {
    /// The plugin that made it.
    pub plugin: String,
    /// Its network's name.
    pub network: String,
    /// `CNI_CONTAINERID`.
    pub container_id: String,
    /// `CNI_IFNAME`.
    pub ifname: String,
    /// `CNI_NETNS` at ADD.
    pub netns: PathBuf,
    /// That netns's inode at ADD.
    pub netns_inode: Option<u64>,
    /// The container interface's MAC, which classifies its frames.
    pub mac: [u8; 6],
    /// The host-side port whose egress feeds the ingress tree (OVS), if any.
    pub port: Option<String>,
    /// Its class minor on both trees.
    pub minor: u16,
    /// From the container.
    pub egress: Class,
    /// To the container.
    pub ingress: Class,
    /// 0 first … 7 last.
    pub priority: u8,
    /// Changed by the admin (`berth-cni-share set`) since ADD: CHECK then
    /// no longer compares it with the configuration.
    #[serde(default)]
    pub pinned: bool,
}

/// What `berth-cni-share set` changes of a grant; `None` keeps the value.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Change {
    /// New egress guarantee, bits/s.
    pub egress_guarantee: Option<u64>,
    /// New ingress guarantee, bits/s.
    pub ingress_guarantee: Option<u64>,
    /// New egress ceiling, bits/s.
    pub egress_ceiling: Option<u64>,
    /// New ingress ceiling, bits/s.
    pub ingress_ceiling: Option<u64>,
    /// New priority.
    pub priority: Option<u8>,
}

impl Entry {
    /// The entry of `env`'s attachment in `plugin`'s `network`, before a
    /// minor is chosen and the grant resolved (see [`Share::admit`]).
    pub fn new(
        plugin: &str,
        network: &str,
        env: &Env,
        netns: &Path,
        mac: [u8; 6],
        port: Option<String>,
    ) -> Entry {
        let a = crate::attachments::Attachment::new(&env.container_id, &env.ifname, netns);
        let none = Class {
            guarantee: 0,
            ceiling: 0,
        };
        Entry {
            plugin: plugin.to_string(),
            network: network.to_string(),
            container_id: a.container_id,
            ifname: a.ifname,
            netns: a.netns,
            netns_inode: a.netns_inode,
            mac,
            port,
            minor: 0,
            egress: none,
            ingress: none,
            priority: DEFAULT_PRIORITY,
            pinned: false,
        }
    }

    /// True when it belongs to `plugin`'s `network` and names `id`/`ifname`.
    pub fn is(&self, plugin: &str, network: &str, id: &str, ifname: &str) -> bool {
        self.plugin == plugin
            && self.network == network
            && self.container_id == id
            && self.ifname == ifname
    }

    /// The classes it needs: egress, ingress.
    pub fn specs(&self) -> Dir<ClassSpec> {
        Dir {
            egress: class_spec(&self.egress, self.priority),
            ingress: class_spec(&self.ingress, self.priority),
        }
    }

    /// True when its netns still exists and is the one it was made in.
    pub fn netns_is_ours(&self) -> bool {
        crate::attachments::Attachment {
            container_id: String::new(),
            ifname: String::new(),
            netns: self.netns.clone(),
            netns_inode: self.netns_inode,
        }
        .netns_is_ours()
    }
}

/// What the kernel holds for one minor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Held {
    /// The class on the link.
    pub egress: Option<ClassSpec>,
    /// The class on the ifb.
    pub ingress: Option<ClassSpec>,
    /// Both MAC filters are in place (and the port's feed, if any).
    pub filters: bool,
}

/// The kernel side of one link's trees.
pub trait Tree {
    /// Makes both trees' qdiscs, root and host classes hold `link` and
    /// `host` (bits/s), and the link's ingress feed if it has one.
    fn ensure_root(&mut self, link: Dir<u64>, host: Dir<u64>) -> Result<(), ShareError>;
    /// The root classes' rates (bits/s) if both trees exist.
    fn root(&mut self) -> Result<Option<Dir<u64>>, ShareError>;
    /// What is held per attachment minor.
    fn held(&mut self) -> Result<BTreeMap<u16, Held>, ShareError>;
    /// Puts `e`'s classes and filters (and feed) in place.
    fn apply(&mut self, e: &Entry) -> Result<(), ShareError>;
    /// Removes minor's filters and classes (and `port`'s feed); gone is fine.
    fn remove(&mut self, minor: u16, port: Option<&str>) -> Result<(), ShareError>;
    /// Removes both trees and the feed: the link carries no share any more.
    fn dismantle(&mut self) -> Result<(), ShareError>;
    /// True when any part of a tree is there (its qdisc, its ifb, the
    /// feed): what an ADD killed before its first commit leaves.
    fn leftover(&mut self) -> Result<bool, ShareError>;
    /// True when `e`'s interface still exists (its netns is ours and holds
    /// a link named `e.ifname` with `e.mac`).
    fn alive(&mut self, e: &Entry) -> bool;
}

/// A share operation failed.
#[derive(Debug, thiserror::Error)]
pub enum ShareError {
    /// Admission: the guarantees would exceed the link (code 110).
    #[error("bandwidth guarantee refused on {link} {dir}: asked {asked} bit/s, {guaranteed} bit/s already guaranteed to {holders} attachment(s) and {host} kept for the host of {capacity}; {left} bit/s left")]
    Full {
        /// The link.
        link: String,
        /// `egress` or `ingress`.
        dir: &'static str,
        /// What was asked.
        asked: u64,
        /// Guaranteed to the others.
        guaranteed: u64,
        /// How many others.
        holders: usize,
        /// The host's share.
        host: u64,
        /// The link's capacity.
        capacity: u64,
        /// What is left.
        left: u64,
    },
    /// No minor is free on the link (code 110).
    #[error("bandwidth share on {0}: every class number is taken")]
    NoMinor(String),
    /// The link's root qdisc is someone else's (code 7).
    #[error("{link} already has a root qdisc {kind} {handle:x}: that Berth did not make; remove it or do not use bandwidthShare on this link")]
    Foreign {
        /// The link.
        link: String,
        /// The qdisc's kind.
        kind: String,
        /// Its handle.
        handle: u32,
    },
    /// `berth-cni-share set`: no such grant, or more than one (code 3).
    #[error("{0}")]
    NoGrant(String),
    /// `berth-cni-share set`: a value that cannot be (code 7).
    #[error("{0}")]
    BadChange(String),
    /// The book could not be locked, read or written (code 5).
    #[error("{what}: {source}")]
    Book {
        /// What was being done.
        what: String,
        /// The OS's words.
        #[source]
        source: std::io::Error,
    },
    /// The kernel refused (code 5).
    #[error(transparent)]
    Link(#[from] LinkError),
}

impl From<crate::netlink::NetlinkError> for ShareError {
    fn from(e: crate::netlink::NetlinkError) -> Self {
        ShareError::Link(e.into())
    }
}

impl Failure for ShareError {
    fn code(&self) -> Code {
        match self {
            ShareError::Full { .. } | ShareError::NoMinor(_) => Code::Plugin(110),
            ShareError::Foreign { .. } | ShareError::BadChange(_) => Code::InvalidConfig,
            ShareError::NoGrant(_) => Code::UnknownContainer,
            ShareError::Book { .. } => Code::Io,
            ShareError::Link(e) => e.code(),
        }
    }

    fn message(&self) -> String {
        match self {
            ShareError::Link(e) => e.message(),
            e => e.to_string(),
        }
    }

    fn details(&self) -> Option<String> {
        match self {
            ShareError::Link(e) => e.details(),
            _ => None,
        }
    }
}

/// The book of one link: what is granted on it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Book {
    /// The link's capacity and host share as last applied.
    root: Option<(Dir<u64>, Dir<u64>)>,
    entries: Vec<Entry>,
}

fn book_err(what: String) -> impl Fn(std::io::Error) -> ShareError {
    move |source| ShareError::Book {
        what: what.clone(),
        source,
    }
}

/// The shares on one link, locked for as long as it lives.
pub struct Share<T: Tree> {
    link: String,
    path: PathBuf,
    _lock: std::fs::File,
    book: Book,
    tree: T,
}

/// Where the books live under `state_dir`.
pub fn books_dir(state_dir: &Path) -> PathBuf {
    state_dir.join("share")
}

/// The grants recorded for `link`, read without the lock (the book is
/// only ever replaced whole); no book is no grants.
pub fn grants(state_dir: &Path, link: &str) -> Result<Vec<Entry>, ShareError> {
    let path = books_dir(state_dir).join(format!("{}.json", crate::attachments::safe(link)));
    match std::fs::read(&path) {
        Ok(b) => {
            let book: Book = serde_json::from_slice(&b).map_err(|e| {
                book_err(format!("read {}", path.display()))(std::io::Error::other(e))
            })?;
            Ok(book.entries)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(book_err(format!("read {}", path.display()))(e)),
    }
}

impl<T: Tree> Share<T> {
    /// Locks and reads the book of `link` (whose trees `tree` reaches).
    pub fn open(state_dir: &Path, link: &str, tree: T) -> Result<Share<T>, ShareError> {
        let dir = books_dir(state_dir);
        std::fs::create_dir_all(&dir).map_err(book_err(format!("create {}", dir.display())))?;
        let name = crate::attachments::safe(link);
        let lock_path = dir.join(format!("{name}.lock"));
        let lock = locked(&lock_path, Access::Exclusive)
            .map_err(book_err(format!("lock {}", lock_path.display())))?;
        let path = dir.join(format!("{name}.json"));
        let book = match std::fs::read(&path) {
            Ok(b) => serde_json::from_slice(&b).unwrap_or_else(|e| {
                // Never written half (temp + rename): this is someone
                // else's edit. Start over; reconcile removes what is orphaned.
                tracing::warn!(book = %path.display(), error = %e, "unreadable bandwidth book; starting an empty one");
                Book::default()
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Book::default(),
            Err(e) => return Err(book_err(format!("read {}", path.display()))(e)),
        };
        Ok(Share {
            link: link.to_string(),
            path,
            _lock: lock,
            book,
            tree,
        })
    }

    fn commit(&self) -> Result<(), ShareError> {
        if self.book.entries.is_empty() {
            match std::fs::remove_file(&self.path) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    return Err(book_err(format!("remove {}", self.path.display()))(e))
                }
                _ => return Ok(()),
            }
        }
        let body = serde_json::to_vec_pretty(&self.book)
            .map_err(|e| book_err(format!("encode {}", self.path.display()))(e.into()))?;
        write_durably(&self.path, &body).map_err(book_err(format!("write {}", self.path.display())))
    }

    /// Makes the kernel hold exactly the book: orphaned classes go, missing
    /// ones come back while their attachment lives. `root` (if given) is
    /// the capacity and host share to hold from now on.
    fn reconcile(&mut self, root: Option<(Dir<u64>, Dir<u64>)>) -> Result<(), ShareError> {
        let root = root.or(self.book.root);
        if self.book.entries.is_empty() && root.is_none() {
            // The book knows no tree; a tree here is an ADD's, killed
            // before its first commit.
            if self.tree.leftover()? {
                tracing::info!(link = %self.link, "removing a bandwidth tree no book records");
                self.tree.dismantle()?;
            }
            return Ok(());
        }
        if let Some((link, host)) = root {
            if self.tree.root()? != Some(link) || self.book.root != Some((link, host)) {
                self.tree.ensure_root(link, host)?;
            }
            self.book.root = Some((link, host));
        }
        let held = self.tree.held()?;
        let owned: BTreeSet<u16> = self.book.entries.iter().map(|e| e.minor).collect();
        for (minor, _) in held.iter().filter(|(m, _)| !owned.contains(m)) {
            tracing::info!(link = %self.link, minor, "removing a bandwidth class no attachment owns");
            self.tree.remove(*minor, None)?;
        }
        let mut keep = Vec::with_capacity(self.book.entries.len());
        for e in std::mem::take(&mut self.book.entries) {
            let want = e.specs();
            let ok = held.get(&e.minor).is_some_and(|h| {
                h.egress == Some(want.egress) && h.ingress == Some(want.ingress) && h.filters
            });
            if ok {
                keep.push(e);
            } else if self.tree.alive(&e) {
                tracing::info!(link = %self.link, container = %e.container_id, "restoring a bandwidth class the kernel lost");
                self.tree.apply(&e)?;
                keep.push(e);
            } else {
                tracing::info!(link = %self.link, container = %e.container_id, "dropping the share of an attachment that is gone");
                self.tree.remove(e.minor, e.port.as_deref())?;
            }
        }
        self.book.entries = keep;
        Ok(())
    }

    /// Drops entries whose attachment is gone; true if any was.
    fn drop_dead(&mut self) -> Result<bool, ShareError> {
        let mut dropped = false;
        let mut keep = Vec::with_capacity(self.book.entries.len());
        for e in std::mem::take(&mut self.book.entries) {
            if self.tree.alive(&e) {
                keep.push(e);
            } else {
                self.tree.remove(e.minor, e.port.as_deref())?;
                dropped = true;
            }
        }
        self.book.entries = keep;
        Ok(dropped)
    }

    fn refusal(&self, key: &Entry, r: &Resolved) -> Option<ShareError> {
        let others: Vec<&Entry> = self
            .book
            .entries
            .iter()
            .filter(|e| !e.is(&key.plugin, &key.network, &key.container_id, &key.ifname))
            .collect();
        let check = |dir: &'static str, asked: u64, cap: u64, host: u64, of: fn(&Entry) -> u64| {
            let guaranteed: u64 = others.iter().map(|e| of(e)).sum();
            let left = cap.saturating_sub(host).saturating_sub(guaranteed);
            (asked > left).then(|| ShareError::Full {
                link: self.link.clone(),
                dir,
                asked,
                guaranteed,
                holders: others.len(),
                host,
                capacity: cap,
                left,
            })
        };
        check(
            "egress",
            r.egress.guarantee,
            r.link_rate.egress,
            r.host_share.egress,
            |e| e.egress.guarantee,
        )
        .or_else(|| {
            check(
                "ingress",
                r.ingress.guarantee,
                r.link_rate.ingress,
                r.host_share.ingress,
                |e| e.ingress.guarantee,
            )
        })
    }

    /// Grants `e` (its minor is chosen here) under `r`, or changes the
    /// grant of the same attachment: admitted, applied, then recorded.
    pub fn admit(&mut self, mut e: Entry, r: &Resolved) -> Result<Entry, ShareError> {
        self.reconcile(Some((r.link_rate, r.host_share)))?;
        if let Some(err) = self.refusal(&e, r) {
            // A lost DEL may hold a guarantee: look before refusing.
            if !self.drop_dead()? {
                self.commit()?;
                return Err(err);
            }
            if let Some(err) = self.refusal(&e, r) {
                self.commit()?;
                return Err(err);
            }
        }
        let prev = self
            .book
            .entries
            .iter()
            .position(|x| x.is(&e.plugin, &e.network, &e.container_id, &e.ifname));
        e.minor = match prev {
            Some(i) => self.book.entries[i].minor,
            None => {
                let held: BTreeSet<u16> = self.tree.held()?.into_keys().collect();
                let used: BTreeSet<u16> = self.book.entries.iter().map(|x| x.minor).collect();
                (FIRST_MINOR..=LAST_MINOR)
                    .find(|m| !used.contains(m) && !held.contains(m))
                    .ok_or_else(|| ShareError::NoMinor(self.link.clone()))?
            }
        };
        e.egress = r.egress;
        e.ingress = r.ingress;
        e.priority = r.priority;
        if let Some(i) = prev {
            let old_port = self.book.entries[i].port.clone();
            if old_port != e.port {
                self.tree.remove(e.minor, old_port.as_deref())?;
            }
            self.book.entries.remove(i);
        }
        self.tree.apply(&e)?;
        self.book.entries.push(e.clone());
        self.commit()?;
        Ok(e)
    }

    /// Frees the grant of `plugin`'s `network`'s attachment; none is fine.
    /// The trees go with the last grant.
    pub fn release(
        &mut self,
        plugin: &str,
        network: &str,
        id: &str,
        ifname: &str,
    ) -> Result<(), ShareError> {
        self.reconcile(None)?;
        if let Some(i) = self
            .book
            .entries
            .iter()
            .position(|e| e.is(plugin, network, id, ifname))
        {
            let e = self.book.entries.remove(i);
            self.tree.remove(e.minor, e.port.as_deref())?;
        }
        self.finish()
    }

    /// Frees the grants of `plugin`'s `network` whose (container, ifname)
    /// is not in `valid`, and those whose attachment is gone.
    pub fn gc(
        &mut self,
        plugin: &str,
        network: &str,
        valid: &[(String, String)],
    ) -> Result<(), ShareError> {
        self.reconcile(None)?;
        let mut keep = Vec::with_capacity(self.book.entries.len());
        for e in std::mem::take(&mut self.book.entries) {
            let ours = e.plugin == plugin && e.network == network;
            if ours && !valid.contains(&(e.container_id.clone(), e.ifname.clone())) {
                tracing::info!(link = %self.link, container = %e.container_id, "GC: freeing a bandwidth share");
                self.tree.remove(e.minor, e.port.as_deref())?;
            } else {
                keep.push(e);
            }
        }
        self.book.entries = keep;
        self.drop_dead()?;
        self.finish()
    }

    fn finish(&mut self) -> Result<(), ShareError> {
        if self.book.entries.is_empty() && self.book.root.is_some() {
            self.tree.dismantle()?;
            self.book.root = None;
        }
        self.commit()
    }

    /// CHECK: the grant of the attachment is recorded with `r`'s values and
    /// the kernel holds its classes and filters.
    pub fn verify(&mut self, key: &Entry, r: &Resolved) -> Result<(), ShareError> {
        let Some(e) = self
            .book
            .entries
            .iter()
            .find(|e| e.is(&key.plugin, &key.network, &key.container_id, &key.ifname))
        else {
            return Err(mismatch(format!("no bandwidth share is granted on {}", self.link)).into());
        };
        if !e.pinned && (e.egress, e.ingress, e.priority) != (r.egress, r.ingress, r.priority) {
            return Err(mismatch(format!(
                "the bandwidth share on {} is {:?}/{:?} priority {}, configured {:?}/{:?} priority {}",
                self.link, e.egress, e.ingress, e.priority, r.egress, r.ingress, r.priority
            ))
            .into());
        }
        let want = e.specs();
        let held = self.tree.held()?;
        let h = held.get(&e.minor).copied().unwrap_or_default();
        if h.egress != Some(want.egress) || h.ingress != Some(want.ingress) || !h.filters {
            return Err(mismatch(format!(
                "the bandwidth classes be00:{:x} on {} are {:?}, expected {:?}",
                e.minor, self.link, h, want
            ))
            .into());
        }
        Ok(())
    }

    /// Changes the grant of `container_id`/`ifname` (of `network`, if
    /// given) in place: same class, new values, admitted as a new request
    /// would be. The grant is then pinned (see [`Entry::pinned`]).
    pub fn set(
        &mut self,
        container_id: &str,
        ifname: &str,
        network: Option<&str>,
        change: &Change,
    ) -> Result<Entry, ShareError> {
        self.reconcile(None)?;
        let found: Vec<&Entry> = self
            .book
            .entries
            .iter()
            .filter(|e| e.container_id == container_id && e.ifname == ifname)
            .filter(|e| network.is_none_or(|n| e.network == n))
            .collect();
        let e = match found.as_slice() {
            [e] => (*e).clone(),
            [] => {
                return Err(ShareError::NoGrant(format!(
                    "no grant on {} for container {container_id} interface {ifname}",
                    self.link
                )))
            }
            _ => {
                return Err(ShareError::NoGrant(format!(
                    "container {container_id} interface {ifname} has grants on {} in several networks: name one with --network",
                    self.link
                )))
            }
        };
        let Some((link_rate, host_share)) = self.book.root else {
            return Err(ShareError::NoGrant(format!(
                "{} carries no shares",
                self.link
            )));
        };
        let class = |c: Class, g: Option<u64>, ceil: Option<u64>, cap: u64, dir: &str| {
            let out = Class {
                guarantee: g.unwrap_or(c.guarantee),
                ceiling: ceil.unwrap_or(c.ceiling),
            };
            if out.ceiling > cap || out.ceiling < MIN_CLASS_RATE {
                return Err(ShareError::BadChange(format!(
                    "{dir} ceiling {} bit/s is not between {MIN_CLASS_RATE} and the link's {cap}",
                    out.ceiling
                )));
            }
            if out.guarantee > out.ceiling {
                return Err(ShareError::BadChange(format!(
                    "{dir} guarantee {} bit/s is over the ceiling of {}",
                    out.guarantee, out.ceiling
                )));
            }
            Ok(out)
        };
        let priority = change.priority.unwrap_or(e.priority);
        if priority > LOWEST_PRIORITY {
            return Err(ShareError::BadChange(format!(
                "priority {priority} is not a priority (0 first … 7 last)"
            )));
        }
        let r = Resolved {
            link_rate,
            host_share,
            egress: class(
                e.egress,
                change.egress_guarantee,
                change.egress_ceiling,
                link_rate.egress,
                "egress",
            )?,
            ingress: class(
                e.ingress,
                change.ingress_guarantee,
                change.ingress_ceiling,
                link_rate.ingress,
                "ingress",
            )?,
            priority,
        };
        let mut e = e;
        e.pinned = true;
        self.admit(e, &r)
    }

    /// The grants on the link.
    pub fn entries(&self) -> &[Entry] {
        &self.book.entries
    }
}

pub mod kernel;

#[cfg(test)]
mod tests;
