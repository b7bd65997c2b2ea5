//! Which program rung a worker runs a program's packets on: [`choose_rung`].
//!
//! A program declares rungs (hardware class, spend class, admitted or not); a worker advertises its
//! own (what its hardware is and whether it costs money). The chosen pair decides the packet
//! ([`crate::program::Program::packet_for_rung`]) and so what [`super::evaluate_dispatch`] is asked.

use crate::program::{Program, UnknownRung};
use crate::wire::AdvertisedRung;

use super::{HardwareClass, Rung};

/// Why no rung could be chosen. The texts are what `btd join --rounds` prints.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RungChoiceError {
    /// The rung asked for (`--rung`) is not one of the program's.
    #[error(transparent)]
    Unknown(#[from] UnknownRung),
    /// The rung asked for needs hardware this node does not advertise.
    #[error(
        "program rung {rung:?} needs {hardware:?} hardware; this node advertises {advertised}"
    )]
    Hardware {
        /// The program rung asked for.
        rung: String,
        /// The hardware it needs.
        hardware: HardwareClass,
        /// This node's rungs, in words.
        advertised: String,
    },
    /// No admitted program rung matches any of this node's rungs by hardware.
    #[error(
        "no admitted rung of the program matches this node's hardware ({advertised}); the program \
         admits {admitted}"
    )]
    NoMatch {
        /// This node's rungs, in words.
        advertised: String,
        /// The program's admitted rungs, in words.
        admitted: String,
    },
}

/// The program rung to run on and this node's rung that provides it.
///
/// `wanted` names a program rung (admitted or not: dispatch decides what may run on it); this node
/// must advertise its hardware. Otherwise: the first of this node's rungs (in config order) that an
/// admitted program rung matches by hardware **and** spend class; failing that, the first that one
/// matches by hardware alone (a local GPU may run a rung the program lists as paid, and dispatch then
/// asks for approval).
pub fn choose_rung(
    program: &Program,
    local: &[AdvertisedRung],
    wanted: Option<&str>,
) -> Result<(Rung, AdvertisedRung), RungChoiceError> {
    if let Some(id) = wanted {
        let rung = program.rung(id)?.clone();
        let mine = local
            .iter()
            .find(|l| l.hardware == rung.hardware)
            .ok_or_else(|| RungChoiceError::Hardware {
                rung: id.to_string(),
                hardware: rung.hardware,
                advertised: describe(local),
            })?;
        return Ok((rung, mine.clone()));
    }
    let exact = local.iter().find_map(|l| {
        program
            .rungs
            .iter()
            .find(|r| r.admitted && r.hardware == l.hardware && r.spend_class == l.spend_class)
            .map(|r| (r.clone(), l.clone()))
    });
    let loose = || {
        local.iter().find_map(|l| {
            program
                .rungs
                .iter()
                .find(|r| r.admitted && r.hardware == l.hardware)
                .map(|r| (r.clone(), l.clone()))
        })
    };
    exact
        .or_else(loose)
        .ok_or_else(|| RungChoiceError::NoMatch {
            advertised: describe(local),
            admitted: program
                .rungs
                .iter()
                .filter(|r| r.admitted)
                .map(|r| format!("{} ({:?})", r.id, r.hardware))
                .collect::<Vec<_>>()
                .join(", "),
        })
}

/// A node's rungs in words: `id (Hardware, SpendClass), ...`.
fn describe(local: &[AdvertisedRung]) -> String {
    local
        .iter()
        .map(|l| format!("{} ({:?}, {:?})", l.id, l.hardware, l.spend_class))
        .collect::<Vec<_>>()
        .join(", ")
}
