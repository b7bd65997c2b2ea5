//! `config.toml`: raw TOML → validated [`Config`], with command-line flags layered on top.

use std::path::Path;

use std::collections::BTreeMap;

use anyhow::{anyhow, bail, Context, Result};
use btd_protocol::dispatch::{HardwareClass, SpendClass};
use btd_protocol::wire::AdvertisedRung;
use btd_trainer::slurm::SlurmConfig;
use libp2p::Multiaddr;
use serde::Deserialize;

/// btd's default port for TCP and QUIC (UDP). Chosen from the unassigned IANA range so a
/// `--bootstrap` address without a port guess works across machines.
pub const DEFAULT_PORT: u16 = 4801;

/// The daemon's settings.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Addresses to listen on.
    pub listen: Vec<Multiaddr>,
    /// Peers to dial at start.
    pub bootstrap: Vec<Multiaddr>,
    /// Offer circuit relay to others.
    pub relay_server: bool,
    /// LAN discovery with mDNS.
    pub mdns: bool,
    /// The connection bound (`crate::net::NetParams::max_peers`).
    pub max_peers: usize,
    /// The rungs this node advertises.
    pub rungs: Vec<AdvertisedRung>,
    /// The rungs whose rounds run as Slurm batch jobs (`executor = "slurm"`), by rung id.
    pub slurm: BTreeMap<String, SlurmConfig>,
}

impl Config {
    /// TCP and QUIC on all interfaces, [`DEFAULT_PORT`].
    pub fn default_listen() -> Vec<Multiaddr> {
        [
            format!("/ip4/0.0.0.0/tcp/{DEFAULT_PORT}"),
            format!("/ip4/0.0.0.0/udp/{DEFAULT_PORT}/quic-v1"),
        ]
        .iter()
        .filter_map(|s| s.parse().ok())
        .collect()
    }

    /// One CPU rung, local and unmetered (hardware detection refines this).
    pub fn default_rungs() -> Vec<AdvertisedRung> {
        vec![AdvertisedRung {
            id: "cpu".into(),
            hardware: HardwareClass::Cpu,
            spend_class: SpendClass::LocalUnmetered,
            detail: format!(
                "{} logical CPUs",
                std::thread::available_parallelism()
                    .map(|n| n.get())
                    .unwrap_or(1)
            ),
        }]
    }

    /// Reads `config.toml` if it exists, else the defaults.
    pub fn load(path: &Path) -> Result<Config> {
        match std::fs::read_to_string(path) {
            Ok(text) => Self::parse(&text).with_context(|| format!("in {}", path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Config {
                listen: Self::default_listen(),
                bootstrap: Vec::new(),
                relay_server: false,
                mdns: false,
                max_peers: crate::net::behaviour::DEFAULT_MAX_PEERS,
                rungs: Self::default_rungs(),
                slurm: BTreeMap::new(),
            }),
            Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
        }
    }

    /// Parses and validates config text.
    pub fn parse(text: &str) -> Result<Config> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| anyhow!("{e}"))?;
        let addrs = |field: &str, v: Vec<String>| -> Result<Vec<Multiaddr>> {
            v.into_iter()
                .map(|s| {
                    s.parse::<Multiaddr>()
                        .map_err(|e| anyhow!("{field}: {s:?} is not a multiaddr: {e}"))
                })
                .collect()
        };
        let mut slurm = BTreeMap::new();
        let rungs = match raw.rungs {
            None => Self::default_rungs(),
            Some(r) => {
                if r.is_empty() || r.len() > btd_protocol::wire::MAX_ADVERTISED_RUNGS {
                    bail!(
                        "rungs: declare 1 to {} rungs",
                        btd_protocol::wire::MAX_ADVERTISED_RUNGS
                    );
                }
                let mut rungs = Vec::new();
                for r in r {
                    let detail = match (r.executor.as_deref().unwrap_or("local"), r.slurm) {
                        ("local", None) => r.detail.unwrap_or_default(),
                        ("local", Some(_)) => bail!(
                            "rungs: {:?} has a [rungs.slurm] table but no executor = \"slurm\"",
                            r.id
                        ),
                        ("slurm", cfg) => {
                            let cfg = cfg.unwrap_or_default();
                            cfg.validate()
                                .map_err(|e| anyhow!("rungs: {:?}: {e}", r.id))?;
                            let detail = r
                                .detail
                                .unwrap_or_else(|| btd_trainer::slurm::describe(&cfg));
                            if slurm.insert(r.id.clone(), cfg).is_some() {
                                bail!("rungs: {:?} is declared twice", r.id);
                            }
                            detail
                        }
                        (other, _) => bail!(
                            "rungs: {:?} has executor {other:?}; use \"local\" or \"slurm\"",
                            r.id
                        ),
                    };
                    rungs.push(AdvertisedRung {
                        id: r.id,
                        hardware: r.hardware,
                        spend_class: r.spend_class.unwrap_or(SpendClass::LocalUnmetered),
                        detail,
                    });
                }
                rungs
            }
        };
        for r in &rungs {
            if r.id.is_empty() || r.id.len() > btd_protocol::wire::MAX_ID_BYTES {
                bail!("rungs: id {:?} must be 1 to 128 bytes", r.id);
            }
        }
        Ok(Config {
            listen: match raw.listen {
                Some(l) => addrs("listen", l)?,
                None => Self::default_listen(),
            },
            bootstrap: addrs("bootstrap", raw.bootstrap.unwrap_or_default())?,
            relay_server: raw.relay_server.unwrap_or(false),
            mdns: raw.mdns.unwrap_or(false),
            max_peers: match raw.max_peers {
                None => crate::net::behaviour::DEFAULT_MAX_PEERS,
                Some(n) if (MIN_MAX_PEERS..=MAX_MAX_PEERS).contains(&n) => n,
                Some(n) => {
                    bail!("max_peers: {n} is out of range; use {MIN_MAX_PEERS} to {MAX_MAX_PEERS}")
                }
            },
            rungs,
            slurm,
        })
    }
}

/// `max_peers` below this leaves too few peers for the gossip mesh (gossipsub wants 6 per topic).
const MIN_MAX_PEERS: usize = 8;
/// `max_peers` above this is the hard connection cap anyway (`net/behaviour.rs`).
const MAX_MAX_PEERS: usize = 512;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    listen: Option<Vec<String>>,
    bootstrap: Option<Vec<String>>,
    relay_server: Option<bool>,
    mdns: Option<bool>,
    max_peers: Option<usize>,
    rungs: Option<Vec<RawRung>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRung {
    id: String,
    hardware: HardwareClass,
    spend_class: Option<SpendClass>,
    detail: Option<String>,
    /// `local` (default) or `slurm`.
    executor: Option<String>,
    /// Settings for `executor = "slurm"`.
    slurm: Option<SlurmConfig>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_overrides() {
        let c = Config::parse("").unwrap();
        assert_eq!(c.listen.len(), 2);
        assert!(c.listen[0].to_string().contains("4801"));
        assert_eq!(c.rungs[0].id, "cpu");
        let c = Config::parse(
            "listen = [\"/ip4/127.0.0.1/tcp/0\"]\nrelay_server = true\n[[rungs]]\nid = \"h100\"\nhardware = \"h100\"\nspend_class = \"paid_metered\"\n",
        )
        .unwrap();
        assert!(c.relay_server);
        assert_eq!(c.max_peers, crate::net::behaviour::DEFAULT_MAX_PEERS);
        assert_eq!(Config::parse("max_peers = 16").unwrap().max_peers, 16);
        let err = Config::parse("max_peers = 2").unwrap_err().to_string();
        assert!(err.contains("max_peers"), "{err}");
        assert_eq!(c.rungs[0].spend_class, SpendClass::PaidMetered);
        let err = Config::parse("listen = [\"nope\"]")
            .unwrap_err()
            .to_string();
        assert!(err.contains("not a multiaddr"), "{err}");
        assert!(Config::parse("colour = 1").is_err());
        assert!(Config::parse("[[rungs]]\nid = \"x\"\nhardware = \"tpu\"\n").is_err());
    }

    #[test]
    fn slurm_rungs() {
        let c = Config::parse(
            "[[rungs]]\nid = \"cluster-h100\"\nhardware = \"h100\"\nexecutor = \"slurm\"\n\
             [rungs.slurm]\npartition = \"gpu\"\naccount = \"lab\"\ngres = \"gpu:h100:1\"\n\
             cpus_per_task = 8\nmem = \"64G\"\nmax_time_secs = 86400\n\
             [[rungs]]\nid = \"cpu\"\nhardware = \"cpu\"\n",
        )
        .unwrap();
        assert_eq!(c.rungs.len(), 2);
        let s = &c.slurm["cluster-h100"];
        assert_eq!(s.partition.as_deref(), Some("gpu"));
        assert_eq!(s.cpus_per_task, Some(8));
        assert_eq!(s.max_time_secs, Some(86400));
        assert_eq!(s.max_queue_secs, btd_trainer::slurm::DEFAULT_MAX_QUEUE_SECS);
        assert!(
            c.rungs[0].detail.contains("partition gpu"),
            "{}",
            c.rungs[0].detail
        );
        assert!(!c.slurm.contains_key("cpu"));
        // Defaults: the cluster's default partition.
        let c = Config::parse("[[rungs]]\nid = \"s\"\nhardware = \"cpu\"\nexecutor = \"slurm\"\n")
            .unwrap();
        assert_eq!(c.slurm["s"], SlurmConfig::default());
        for (bad, why) in [
            ("executor = \"k8s\"", "use \"local\" or \"slurm\""),
            (
                "[rungs.slurm]\npartition = \"gpu\"",
                "no executor = \"slurm\"",
            ),
            (
                "executor = \"slurm\"\n[rungs.slurm]\npartition = \"-x\"",
                "slurm.partition",
            ),
            (
                "executor = \"slurm\"\n[rungs.slurm]\nnodes = 4",
                "unknown field",
            ),
        ] {
            let text = format!("[[rungs]]\nid = \"s\"\nhardware = \"cpu\"\n{bad}\n");
            let e = format!("{:#}", Config::parse(&text).unwrap_err());
            assert!(e.contains(why), "{bad}: {e}");
        }
    }
}
