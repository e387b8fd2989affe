//! What an earlier process of a resumed run left: its record, or its
//! journal's newer running totals when it was killed, checked before they
//! are believed.

use super::{EnergyRecord, WaitingRecord, JOURNAL, JOURNAL_EVERY_S};
use crate::estimate::TrackingMode;
use crate::journal::Journal;
use crate::{ComponentEnergy, Provenance};
use serde::{Deserialize, Serialize};
use std::path::Path;

/// What an earlier process of a resumed run left.
pub struct Prior {
    /// Its energy record (run.json as last saved; none when it was killed
    /// before its first save).
    pub energy: Option<EnergyRecord>,
    /// Its grams.
    pub co2_g: f64,
    /// Whether it ended without saving a final state (killed): its journal
    /// then says more than run.json, and up to one journal interval after
    /// the journal's last entry went unmetered.
    pub killed: bool,
}

/// One journal line: the run's totals as of `unix`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(super) struct JournalEntry {
    pub(super) unix: f64,
    pub(super) components: Vec<ComponentEnergy>,
    pub(super) duration_s: f64,
    pub(super) co2_g: f64,
    #[serde(default)]
    pub(super) waiting: Option<WaitingRecord>,
    #[serde(default)]
    pub(super) unmetered_s: f64,
}

impl JournalEntry {
    /// Why this entry cannot be a running total a meter wrote (a crafted or
    /// damaged file): `None` when every figure is finite and not negative.
    fn implausible(&self) -> Option<String> {
        let bad = |x: f64| !x.is_finite() || x < 0.0;
        if !self.unix.is_finite() || self.unix <= 0.0 {
            return Some(format!("time {}", self.unix));
        }
        if let Some(c) = self.components.iter().find(|c| bad(c.joules)) {
            return Some(format!("{} J for {}", c.joules, c.name));
        }
        for (what, x) in [
            ("duration_s", self.duration_s),
            ("co2_g", self.co2_g),
            ("unmetered_s", self.unmetered_s),
        ] {
            if bad(x) {
                return Some(format!("{what} {x}"));
            }
        }
        None
    }
}

pub(super) fn merge_waiting(
    a: Option<WaitingRecord>,
    b: Option<WaitingRecord>,
) -> Option<WaitingRecord> {
    match (a, b) {
        (Some(a), Some(b)) => Some(WaitingRecord {
            seconds: a.seconds + b.seconds,
            joules: a.joules + b.joules,
            co2_g: a.co2_g + b.co2_g,
            provenance: a.provenance.weakest(b.provenance),
        }),
        (a, b) => a.or(b),
    }
}

/// The totals an earlier process left: run.json's, or its journal's when
/// the journal is newer (the process was killed after its last save), plus
/// the unmetered interval of a killed process.
pub(super) fn recover(
    p: Prior,
    journal: Option<&Path>,
    warnings: &mut Vec<String>,
) -> Option<(EnergyRecord, f64)> {
    let as_of = p.energy.as_ref().map_or(0.0, |e| e.as_of_unix);
    let newer = journal
        .and_then(Journal::last::<JournalEntry>)
        .filter(|j| j.unix > as_of)
        .filter(|j| match j.implausible() {
            None => true,
            Some(why) => {
                warnings.push(format!(
                    "{JOURNAL}: its last entry is not a running total ({why}); ignored, the energy since the last saved record is unmetered"
                ));
                false
            }
        });
    let (mut e, g) = match (p.energy, newer) {
        (e, Some(j)) => {
            warnings.push(format!(
                "the previous process stopped without saving its energy; its totals up to {} come from {JOURNAL}",
                crate::carbon::format_time(j.unix)
            ));
            (from_journal(e, j.clone()), j.co2_g)
        }
        (Some(e), None) => (e, p.co2_g),
        (None, None) => return None,
    };
    if p.killed {
        e.unmetered_s += JOURNAL_EVERY_S;
        warnings.push(format!(
            "the previous process was killed: up to {JOURNAL_EVERY_S} s of it after {} went unmetered (energy.unmetered_s)",
            crate::carbon::format_time(e.as_of_unix)
        ));
    }
    Some((e, g))
}

/// A record with a journal entry's totals (and the rest of `base`, or
/// nothing, when the process was killed before its first save).
fn from_journal(base: Option<EnergyRecord>, j: JournalEntry) -> EnergyRecord {
    let total_j: f64 = j.components.iter().map(|c| c.joules).sum();
    let provenance = j
        .components
        .iter()
        .map(|c| c.provenance)
        .fold(Provenance::Measured, Provenance::weakest);
    let base = base.unwrap_or(EnergyRecord {
        components: vec![],
        total_j: 0.0,
        duration_s: 0.0,
        total_kwh: 0.0,
        provenance,
        tracking_mode: TrackingMode::Machine,
        meters: vec![],
        sample_hz: 0.0,
        idle: None,
        windows: vec![],
        prediction: None,
        warnings: vec![],
        waiting: None,
        unmetered_s: 0.0,
        as_of_unix: 0.0,
    });
    EnergyRecord {
        total_j,
        total_kwh: total_j / 3.6e6,
        provenance,
        components: j.components,
        duration_s: j.duration_s,
        waiting: j.waiting,
        unmetered_s: j.unmetered_s,
        as_of_unix: j.unix,
        ..base
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A journal whose last line claims negative joules (or a NaN) is not
    /// taken as the run's energy: a warning, and no record from it.
    #[test]
    fn an_implausible_journal_entry_is_ignored_with_a_warning() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join(JOURNAL);
        let line = |j: f64| {
            format!(
                "{{\"unix\":1.8e9,\"components\":[{{\"name\":\"cpu\",\"kind\":\"cpu\",\"joules\":{j},\"provenance\":\"estimated\",\"method\":\"tdp\"}}],\"duration_s\":10.0,\"co2_g\":0.1}}\n"
            )
        };
        let prior = || Prior {
            energy: None,
            co2_g: 0.0,
            killed: true,
        };
        std::fs::write(&path, line(-2.0e6)).unwrap();
        let mut warnings = vec![];
        assert!(recover(prior(), Some(&path), &mut warnings).is_none());
        assert!(warnings[0].contains("-2000000 J for cpu"), "{warnings:?}");
        std::fs::write(&path, line(500.0)).unwrap();
        let (e, _) = recover(prior(), Some(&path), &mut vec![]).unwrap();
        assert_eq!(e.total_j, 500.0);
    }
}
