//! `config.toml`: raw TOML → validated [`Config`], with command-line flags layered on top.

use std::path::Path;

use anyhow::{anyhow, bail, Context, Result};
use btd_protocol::dispatch::{HardwareClass, SpendClass};
use btd_protocol::wire::AdvertisedRung;
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
    /// The rungs this node advertises.
    pub rungs: Vec<AdvertisedRung>,
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
                rungs: Self::default_rungs(),
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
        let rungs = match raw.rungs {
            None => Self::default_rungs(),
            Some(r) => {
                if r.is_empty() || r.len() > btd_protocol::wire::MAX_ADVERTISED_RUNGS {
                    bail!(
                        "rungs: declare 1 to {} rungs",
                        btd_protocol::wire::MAX_ADVERTISED_RUNGS
                    );
                }
                r.into_iter()
                    .map(|r| AdvertisedRung {
                        id: r.id,
                        hardware: r.hardware,
                        spend_class: r.spend_class.unwrap_or(SpendClass::LocalUnmetered),
                        detail: r.detail.unwrap_or_default(),
                    })
                    .collect()
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
            rungs,
        })
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    listen: Option<Vec<String>>,
    bootstrap: Option<Vec<String>>,
    relay_server: Option<bool>,
    mdns: Option<bool>,
    rungs: Option<Vec<RawRung>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRung {
    id: String,
    hardware: HardwareClass,
    spend_class: Option<SpendClass>,
    detail: Option<String>,
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
        assert_eq!(c.rungs[0].spend_class, SpendClass::PaidMetered);
        let err = Config::parse("listen = [\"nope\"]")
            .unwrap_err()
            .to_string();
        assert!(err.contains("not a multiaddr"), "{err}");
        assert!(Config::parse("colour = 1").is_err());
        assert!(Config::parse("[[rungs]]\nid = \"x\"\nhardware = \"tpu\"\n").is_err());
    }
}
