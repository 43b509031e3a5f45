//! Learned baselines per secret: which executables (and their parents) use it, for which task
//! owners, which destinations its holders reach, and how fast it is used. While a secret is
//! learning, its uses teach the baseline; once learned, a use outside it is `anomalous_use`,
//! and what was new joins the baseline (one finding per novelty). Only uses no policy rule
//! objected to teach: a reuse across tasks never becomes normal.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::SocketAddr,
};

use serde::{Deserialize, Serialize};

const MINUTE_NS: u64 = 60_000_000_000;

/// When a baseline is learned and what counts as a burst.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BaselineConfig {
    /// A baseline learns for at least this long after the secret's first use...
    pub learn_ns: u64,
    /// ...and at least this many uses.
    pub learn_uses: u64,
    /// A minute with more than `burst_factor` times the learned peak of uses a minute, and at
    /// least `burst_floor` uses, is a burst.
    pub burst_factor: u64,
    pub burst_floor: u64,
}

impl Default for BaselineConfig {
    fn default() -> Self {
        Self { learn_ns: 3_600 * 1_000_000_000, learn_uses: 20, burst_factor: 10, burst_floor: 30 }
    }
}

/// What one secret's uses looked like while it was learning, and since.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Baseline {
    /// Once learned, a baseline stays learned (across restarts too).
    pub learned: bool,
    pub uses: u64,
    /// Engine time of the first use in this boot, for the learning period.
    pub first_use_ns: u64,
    pub executables: BTreeSet<String>,
    pub parents: BTreeSet<String>,
    pub owners: BTreeSet<String>,
    pub destinations: BTreeSet<SocketAddr>,
    /// The most uses seen in one minute while learning.
    pub peak_per_minute: u64,
    #[serde(skip)]
    minute: Minute,
}

/// Uses in the current minute, and whether it was already reported as a burst.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Minute {
    start_ns: u64,
    uses: u64,
    reported: bool,
}

/// Who used a secret, as the baseline sees it.
#[derive(Clone, Copy, Debug)]
pub(super) struct User<'a> {
    pub(super) executable: Option<&'a str>,
    pub(super) parent: Option<&'a str>,
    pub(super) owner: Option<&'a str>,
}

/// What was outside a learned baseline.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Novelty {
    Executable(String),
    Parent(String),
    Owner(String),
    Destination(SocketAddr),
    Burst { per_minute: u64 },
}

impl Baseline {
    /// "learned over 25 uses: executables /usr/bin/aws; 1 destination; up to 4 uses a minute".
    pub(super) fn summary(&self) -> String {
        let executables: Vec<&str> = self.executables.iter().map(String::as_str).collect();
        let destinations = self.destinations.len();
        format!(
            "learned over {} uses: executables {}; {destinations} destination{}; up to {} uses a minute",
            self.uses,
            if executables.is_empty() { "none".to_owned() } else { executables.join(", ") },
            if destinations == 1 { "" } else { "s" },
            self.peak_per_minute
        )
    }

    fn count(&mut self, at_ns: u64) -> u64 {
        if self.uses == 0 || at_ns < self.first_use_ns {
            self.first_use_ns = at_ns;
        }
        self.uses += 1;
        if at_ns.saturating_sub(self.minute.start_ns) >= MINUTE_NS {
            self.minute = Minute { start_ns: at_ns, uses: 0, reported: false };
        }
        self.minute.uses += 1;
        self.minute.uses
    }
}

/// `value`, if `seen` does not hold it.
fn unseen(seen: &BTreeSet<String>, value: Option<&str>) -> Option<String> {
    value.filter(|value| !seen.contains(*value)).map(str::to_owned)
}

/// The baseline of `secret`, new if it has none; no allocation for one it has.
fn baseline_mut<'a>(by_secret: &'a mut BTreeMap<String, Baseline>, secret: &str) -> &'a mut Baseline {
    if !by_secret.contains_key(secret) {
        by_secret.insert(secret.to_owned(), Baseline::default());
    }
    by_secret.get_mut(secret).expect("inserted above")
}

/// Every secret's baseline, by a key that survives restarts (see [`super::secrets`]).
#[derive(Debug, Default)]
pub(super) struct Baselines {
    config: BaselineConfig,
    by_secret: BTreeMap<String, Baseline>,
    /// Something changed since the daemon last persisted the baselines.
    changed: bool,
}

impl Baselines {
    pub(super) fn new(config: BaselineConfig) -> Self {
        Self { config, ..Self::default() }
    }

    /// A use by `user`: learns it, or, once the baseline is learned, returns what in it is new
    /// with a summary of the baseline as it was before this use.
    pub(super) fn used(&mut self, secret: &str, at_ns: u64, user: User<'_>) -> (Vec<Novelty>, Option<String>) {
        let config = self.config;
        self.changed = true;
        let baseline = baseline_mut(&mut self.by_secret, secret);
        let User { executable, parent, owner } = user;
        let mut novel = Vec::new();
        if baseline.learned {
            novel.extend(unseen(&baseline.executables, executable).map(Novelty::Executable));
            novel.extend(unseen(&baseline.parents, parent).map(Novelty::Parent));
            novel.extend(unseen(&baseline.owners, owner).map(Novelty::Owner));
        }
        let mut summary = (!novel.is_empty()).then(|| baseline.summary());
        for (seen, value) in
            [(&mut baseline.executables, executable), (&mut baseline.parents, parent), (&mut baseline.owners, owner)]
        {
            if let Some(value) = value.filter(|value| !seen.contains(*value)) {
                seen.insert(value.to_owned());
            }
        }
        let in_minute = baseline.count(at_ns);
        if baseline.learned {
            let limit = (baseline.peak_per_minute * config.burst_factor).max(config.burst_floor);
            if in_minute > limit && !baseline.minute.reported {
                baseline.minute.reported = true;
                summary.get_or_insert_with(|| baseline.summary());
                novel.push(Novelty::Burst { per_minute: in_minute });
            }
        } else {
            baseline.peak_per_minute = baseline.peak_per_minute.max(in_minute);
            let long_enough = at_ns.saturating_sub(baseline.first_use_ns) >= config.learn_ns;
            baseline.learned = long_enough && baseline.uses >= config.learn_uses;
        }
        (novel, summary)
    }

    /// A holder of `secret` reached `destination`: new, once learned, with the summary of the
    /// baseline before it.
    pub(super) fn reached(&mut self, secret: &str, destination: SocketAddr) -> Option<(Novelty, String)> {
        let baseline = baseline_mut(&mut self.by_secret, secret);
        if baseline.destinations.contains(&destination) {
            return None;
        }
        self.changed = true;
        let summary = baseline.summary();
        baseline.destinations.insert(destination);
        baseline.learned.then_some((Novelty::Destination(destination), summary))
    }

    pub(super) fn all(&self) -> &BTreeMap<String, Baseline> {
        &self.by_secret
    }

    /// Takes over baselines persisted by an earlier run; what this run learnt already stays.
    pub(super) fn restore(&mut self, persisted: &BTreeMap<String, Baseline>) {
        for (secret, baseline) in persisted {
            self.by_secret.entry(secret.clone()).or_insert_with(|| baseline.clone());
        }
    }

    /// Forgets one secret's baseline, or all of them: they learn again.
    pub(super) fn reset(&mut self, secret: Option<&str>) {
        match secret {
            Some(secret) => {
                self.by_secret.remove(secret);
            }
            None => self.by_secret.clear(),
        }
        self.changed = true;
    }

    /// Whether anything changed since the last call.
    pub(super) fn take_changed(&mut self) -> bool {
        std::mem::take(&mut self.changed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(executable: &str) -> User<'_> {
        User { executable: Some(executable), parent: Some("/bin/sh"), owner: Some("ci") }
    }

    fn learned() -> Baselines {
        let config = BaselineConfig { learn_ns: 1_000, learn_uses: 3, burst_factor: 2, burst_floor: 5 };
        let mut baselines = Baselines::new(config);
        for at_ns in [0, 500, 1_000] {
            assert!(baselines.used("aws", at_ns, user("/usr/bin/aws")).0.is_empty());
        }
        assert!(baselines.all()["aws"].learned);
        baselines
    }

    #[test]
    fn learning_needs_both_the_time_and_the_uses() {
        let config = BaselineConfig { learn_ns: 1_000, learn_uses: 3, ..BaselineConfig::default() };
        let mut baselines = Baselines::new(config);
        baselines.used("aws", 0, user("/usr/bin/aws"));
        baselines.used("aws", 2_000, user("/usr/bin/aws"));
        assert!(!baselines.all()["aws"].learned, "two uses are not enough");
        baselines.used("aws", 2_001, user("/usr/bin/aws"));
        assert!(baselines.all()["aws"].learned);
    }

    #[test]
    fn a_new_executable_parent_or_owner_is_new_once() {
        let mut baselines = learned();
        assert!(baselines.used("aws", 2_000, user("/usr/bin/aws")).0.is_empty(), "the same workload is silent");
        let (novel, summary) = baselines.used("aws", 3_000, User { owner: Some("intern"), ..user("/usr/bin/nc") });
        assert_eq!(novel, [Novelty::Executable("/usr/bin/nc".into()), Novelty::Owner("intern".into())]);
        assert_eq!(
            summary.as_deref(),
            Some("learned over 4 uses: executables /usr/bin/aws; 0 destinations; up to 3 uses a minute"),
            "the baseline as it was before"
        );
        assert!(baselines.used("aws", 4_000, user("/usr/bin/nc")).0.is_empty(), "now part of the baseline");
    }

    #[test]
    fn a_burst_is_far_above_the_learned_peak_and_reported_once_a_minute() {
        let mut baselines = learned();
        let start = 10 * MINUTE_NS;
        let novel: Vec<_> =
            (0..7).flat_map(|use_| baselines.used("aws", start + use_, user("/usr/bin/aws")).0).collect();
        assert_eq!(novel, [Novelty::Burst { per_minute: 7 }], "a peak of 3 a minute, twice that is 6, above the floor of 5");
        assert!(baselines.used("aws", start + 8, user("/usr/bin/aws")).0.is_empty(), "once a minute");
    }

    #[test]
    fn destinations_learn_then_stand_out() {
        let mut baselines = Baselines::new(BaselineConfig { learn_ns: 0, learn_uses: 1, ..BaselineConfig::default() });
        let api: SocketAddr = "140.82.112.3:443".parse().unwrap();
        assert_eq!(baselines.reached("gh", api), None);
        baselines.used("gh", 0, user("/usr/bin/gh"));
        assert_eq!(baselines.reached("gh", api), None, "seen while learning");
        let paste: SocketAddr = "10.9.9.9:80".parse().unwrap();
        let (novelty, _) = baselines.reached("gh", paste).unwrap();
        assert_eq!(novelty, Novelty::Destination(paste));
    }
}
