//! Open/close on the security-hook tiers, which this host refuses: the same loop by a process in
//! no task, in the test VM booted for the LSM tier and for the fmod_ret tier (`vm::bench`). QEMU
//! emulates the CPU (TCG here), so the figures are ratios within one boot, never compared with the
//! host's or across boots.

use super::{error::BenchError, stats::Spread, Bench};
use crate::vm;

/// One tier's open/close loop under credwatch against no monitor, over the rounds.
pub struct TierOverhead {
    pub tier: &'static str,
    /// Under credwatch over the mean of the baseline runs before and after it.
    pub ratio: Spread,
    /// CPU nanoseconds per open+close with no monitor, in the guest.
    pub baseline_ns: Spread,
}

pub fn measure(bench: &Bench) -> Result<Vec<TierOverhead>, BenchError> {
    let scale = bench.scale;
    let tiers = vm::bench(&bench.binary, scale.vm_opens, scale.vm_rounds)?;
    Ok(tiers
        .into_iter()
        .map(|tier| {
            let ratios: Vec<f64> = tier.rounds.iter().map(|&[before, with, after]| with / ((before + after) / 2.0)).collect();
            let baselines: Vec<f64> = tier.rounds.iter().flat_map(|&[before, _, after]| [before, after]).collect();
            TierOverhead {
                tier: tier.config.tier(),
                ratio: Spread::of(&ratios).expect("vm::bench returns every round it was asked for"),
                baseline_ns: Spread::of(&baselines).expect("vm::bench returns every round it was asked for"),
            }
        })
        .collect())
}
