//! The BatchNorm statistics check of a conversion: diagnose, then refuse, allow or recalibrate
//! stale statistics ([`StaleBnPolicy`]).

use anyhow::Result;

use super::diagnose::{self, DiagnoseOptions, Diagnosis, Outcome, Thresholds, Verdict};
use crate::io::Array;
use crate::ir::graph::ImportedGraph;
use crate::passes::recalibrate_bn::Recalibration;

/// What a checked conversion does when BatchNorm statistics are stale.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StaleBnPolicy {
    /// Refuse with an error naming every stale node (the default).
    Refuse,
    /// Warn and fold the statistics as they are (`--allow-stale-bn`).
    Allow,
    /// Re-estimate every BatchNorm's statistics from the calibration data, then fold
    /// (`--recalibrate-bn`). Applies whatever the verdict.
    Recalibrate,
}

/// The BatchNorm statistics check before folding.
#[derive(Clone, Copy, Debug)]
pub struct BnCheckOptions<'a> {
    /// Calibration samples `[N, ...]` in the model's input shape (N >= 2).
    pub calib: &'a Array,
    /// What to do with stale statistics.
    pub on_stale: StaleBnPolicy,
    /// Verdict thresholds.
    pub thresholds: Thresholds,
    /// Show progress bars.
    pub progress: bool,
}

impl<'a> BnCheckOptions<'a> {
    /// Default thresholds, refuse stale statistics, no progress bars.
    pub fn new(calib: &'a Array) -> Self {
        BnCheckOptions {
            calib,
            on_stale: StaleBnPolicy::Refuse,
            thresholds: Thresholds::DEFAULT,
            progress: false,
        }
    }
}

/// What the BatchNorm check found and did.
#[derive(Clone, Debug)]
pub struct BnStatsCheck {
    /// The diagnosis of the graph as imported.
    pub diagnosis: Diagnosis,
    /// The policy applied.
    pub policy: StaleBnPolicy,
    /// Set when the statistics were re-estimated before folding: what changed.
    pub recalibration: Option<Recalibration>,
}

impl BnStatsCheck {
    /// True when stale statistics were folded as they are (`Allow`).
    pub fn folded_stale(&self) -> bool {
        self.recalibration.is_none() && self.diagnosis.outcome() == Outcome::Stale
    }
}

/// Diagnoses `imported`'s BatchNorm statistics on `opts.calib` and applies `opts.on_stale`:
/// returns the graph to fold (recalibrated under `Recalibrate`) and what was found. Under
/// `Refuse`, stale statistics are an error that names every stale node and says what to do.
pub fn check_bn_statistics(
    imported: ImportedGraph,
    opts: &BnCheckOptions<'_>,
) -> Result<(ImportedGraph, BnStatsCheck)> {
    let diagnosis = diagnose::diagnose(
        &imported,
        opts.calib,
        &DiagnoseOptions {
            thresholds: opts.thresholds,
            // The "as run" numbers only explain; a conversion does not need them.
            as_run: false,
            progress: opts.progress,
        },
    )?;
    match opts.on_stale {
        StaleBnPolicy::Recalibrate if diagnosis.outcome() != Outcome::NoBatchNorm => {
            let recalibration = diagnosis.recalibration.clone();
            let graph = recalibration.graph.clone();
            Ok((
                graph,
                BnStatsCheck {
                    diagnosis,
                    policy: opts.on_stale,
                    recalibration: Some(recalibration),
                },
            ))
        }
        StaleBnPolicy::Refuse if diagnosis.outcome() == Outcome::Stale => {
            Err(anyhow::anyhow!(stale_error(&diagnosis)))
        }
        _ => Ok((
            imported,
            BnStatsCheck {
                diagnosis,
                policy: opts.on_stale,
                recalibration: None,
            },
        )),
    }
}

/// The refusal message: every stale node with its worst channel, then the ways out.
fn stale_error(d: &Diagnosis) -> String {
    let mut s = format!(
        "refusing to fold stale BatchNorm statistics: {} of {} BatchNorm node(s) do not match the \
         calibration data ({} samples):",
        d.stale().count(),
        d.bns.len(),
        d.samples
    );
    for b in d.stale() {
        let w = b.worst_channels(1, &d.thresholds);
        let detail = w.first().map_or(String::new(), |c| {
            format!(
                "; worst channel {}: running mean {:.4} vs data {:.4}, running variance {:.4} vs \
                 data {:.4} (mean shift {:.2} std, variance ratio {:.3})",
                c.channel,
                c.running_mean,
                c.data_mean,
                c.running_var,
                c.data_var,
                c.shift,
                c.var_ratio
            )
        });
        s.push_str(&format!(
            "\n  {}: {}{}",
            b.origin,
            if b.never_updated {
                "never updated (running mean 0, variance 1 in every channel)".to_string()
            } else {
                format!(
                    "{} of {} channels stale",
                    b.count_at_least(Verdict::Stale),
                    b.channel_count()
                )
            },
            detail
        ));
    }
    s.push_str(
        "\nFolding them would freeze a model that does not compute what was trained. Either \
         update the running statistics in training and export again, or re-estimate them from \
         the calibration data (icefold convert --recalibrate-bn; library: \
         StaleBnPolicy::Recalibrate), or fold them anyway (--allow-stale-bn; \
         StaleBnPolicy::Allow). `icefold diagnose MODEL --calib CALIB` shows every channel.",
    );
    s
}
