//! `berth-cni-share`: the command line over `berth_cni::share`. See `--help`
//! and the README.

use anyhow::Result;
use berth_cni::logging::HostSettings;
use berth_cni::share::{self, kernel, Change};
use clap::{Parser, Subcommand};

/// Show and change the bandwidth shares (`bandwidthShare`) that
/// berth-macvlan and berth-ovs-vlan granted on a link.
///
/// Each grant is a guaranteed rate, a ceiling it may borrow up to, and a
/// priority (0 first … 7 last), per direction: egress leaves the container,
/// ingress reaches it. Rates are bits/s. The books live under the
/// `state_dir` of /etc/berth/cni.toml (BERTH_CNI_CONFIG for another file).
/// Exit status: 0 done, 1 refused or failed (the reason on stderr).
#[derive(Debug, Parser)]
#[command(name = "berth-cni-share", version)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// List the grants on LINK (the macvlan master or the OVS uplink).
    List {
        /// The link.
        link: String,
        /// Print the book's JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Change one attachment's guarantee, ceiling or priority in place: the
    /// link and its class stay, the new values are admitted as a new request
    /// would be (a refusal changes nothing). CHECK then no longer compares
    /// the grant with the network configuration.
    Set {
        /// The link.
        link: String,
        /// The attachment's container ID (`CNI_CONTAINERID`).
        #[arg(long)]
        container: String,
        /// Its interface in the container (`CNI_IFNAME`).
        #[arg(long, default_value = "eth0")]
        ifname: String,
        /// Its network, when it has grants on LINK in more than one.
        #[arg(long)]
        network: Option<String>,
        /// New guarantee from the container, bits/s.
        #[arg(long)]
        egress_guarantee: Option<u64>,
        /// New guarantee to the container, bits/s.
        #[arg(long)]
        ingress_guarantee: Option<u64>,
        /// New ceiling from the container, bits/s.
        #[arg(long)]
        egress_ceiling: Option<u64>,
        /// New ceiling to the container, bits/s.
        #[arg(long)]
        ingress_ceiling: Option<u64>,
        /// New priority, 0 (first) to 7 (last).
        #[arg(long)]
        priority: Option<u8>,
    },
}

fn main() {
    berth_cni_gc::init_logging();
    if let Err(e) = run(Cli::parse()) {
        eprintln!("berth-cni-share: {e:#}");
        std::process::exit(1);
    }
}

fn run(cli: Cli) -> Result<()> {
    match cli.cmd {
        Cmd::List { link, json } => {
            let grants = share::grants(&HostSettings::from_env().state_dir(), &link)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&grants)?);
                return Ok(());
            }
            println!(
                "CONTAINER\tIFNAME\tNETWORK\tCLASS\tEGRESS(g/ceil)\tINGRESS(g/ceil)\tPRIORITY"
            );
            for g in grants {
                println!(
                    "{}\t{}\t{}\tbe00:{:x}\t{}/{}\t{}/{}\t{}{}",
                    g.container_id,
                    g.ifname,
                    g.network,
                    g.minor,
                    g.egress.guarantee,
                    g.egress.ceiling,
                    g.ingress.guarantee,
                    g.ingress.ceiling,
                    g.priority,
                    if g.pinned { " (set)" } else { "" }
                );
            }
            Ok(())
        }
        Cmd::Set {
            link,
            container,
            ifname,
            network,
            egress_guarantee,
            ingress_guarantee,
            egress_ceiling,
            ingress_ceiling,
            priority,
        } => {
            let change = Change {
                egress_guarantee,
                ingress_guarantee,
                egress_ceiling,
                ingress_ceiling,
                priority,
            };
            if change == Change::default() {
                anyhow::bail!("nothing to change: give a guarantee, a ceiling or a priority");
            }
            let mut s = kernel::open_by_name(&link)?;
            let e = s.set(&container, &ifname, network.as_deref(), &change)?;
            tracing::info!(%link, container = %e.container_id, ifname = %e.ifname, class = format!("be00:{:x}", e.minor), egress = ?e.egress, ingress = ?e.ingress, priority = e.priority, "grant changed");
            Ok(())
        }
    }
}
