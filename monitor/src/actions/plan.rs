//! Which actions each rule takes: the `[actions]` table of the config.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::engine::Rule;

/// One thing to do about a finding.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// Publish it (audit log, API, alert sinks). Every finding is published; listing `alert`
    /// alone says "do nothing else".
    Alert,
    /// Kill the acting process.
    KillProcess,
    /// Kill every process of the acting process's task.
    KillTask,
    /// Refuse the operation (LSM and fmod_ret tiers, and the file guard and socket hooks); elsewhere, kill the process instead.
    Deny,
    /// POST to the revocation webhook.
    Revoke,
}

impl Action {
    /// The snake_case name used in configuration and metric labels.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Alert => "alert",
            Self::KillProcess => "kill_process",
            Self::KillTask => "kill_task",
            Self::Deny => "deny",
            Self::Revoke => "revoke",
        }
    }
}

/// The `[actions]` table: rule name → actions.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ActionPlan(BTreeMap<Rule, Vec<Action>>);

impl Default for ActionPlan {
    /// Kill on reuse of a secret bound to a task (there is no binding unless a task used or was
    /// granted the secret), alert on everything else.
    fn default() -> Self {
        Self(BTreeMap::from([
            (Rule::CrossTaskReuse, vec![Action::KillProcess]),
            (Rule::PostTaskReuse, vec![Action::KillProcess]),
            (Rule::DecoyTouched, vec![Action::KillProcess]),
        ]))
    }
}

impl ActionPlan {
    /// The default plan with `per_rule` replacing the rules it names.
    pub fn with(per_rule: BTreeMap<Rule, Vec<Action>>) -> Self {
        let mut plan = Self::default();
        plan.0.extend(per_rule);
        plan
    }

    pub fn actions(&self, rule: Rule) -> &[Action] {
        self.0.get(&rule).map_or(&[Action::Alert], Vec::as_slice)
    }

    /// Whether the rule's actions kill a process, so the kernel may do it at once.
    pub fn kills(&self, rule: Rule) -> bool {
        self.actions(rule).iter().any(|action| matches!(action, Action::KillProcess | Action::KillTask | Action::Deny))
    }

    /// Whether the rule's actions kill the process, not only refuse what it does.
    pub fn kills_process(&self, rule: Rule) -> bool {
        self.actions(rule).iter().any(|action| matches!(action, Action::KillProcess | Action::KillTask))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_plan_kills_only_on_reuse_of_bound_secrets() {
        let plan = ActionPlan::default();
        assert!(plan.kills(Rule::CrossTaskReuse));
        assert!(plan.kills(Rule::PostTaskReuse));
        for rule in [Rule::UnexpectedDestination, Rule::EnvironHarvest, Rule::SecretPropagation, Rule::UntaskedAccess] {
            assert_eq!(plan.actions(rule), [Action::Alert], "{rule:?}");
            assert!(!plan.kills(rule));
        }
    }
}
