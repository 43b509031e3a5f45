//! Secrets, the tasks they are bound to, and how far each has spread.

use std::collections::{BTreeSet, HashMap};

use serde::{Deserialize, Serialize};

use super::{
    finding::{SecretLabel, Sprawl},
    tasks::{TaskRef, Tasks},
};
use crate::event::{Fingerprint, InodeId, SecretId};

/// A secret the daemon watches, as announced to the engine.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecretSpec {
    pub id: SecretId,
    /// A path or an environment variable's name, for findings.
    pub name: String,
    pub kind: SecretKind,
    /// Keyed fingerprint of the value (of a small file's content), so that the value is
    /// recognised when it shows up in an environment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fingerprint: Option<Fingerprint>,
    /// A planted fake credential: any task's use of it is decoy_touched.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub decoy: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum SecretKind {
    File { inode: InodeId, path: String },
    Env { name: String },
    Token,
}

/// How the engine keys a secret: a watched secret by its id, any other value by its fingerprint.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(super) enum SecretKey {
    Watched(SecretId),
    Value(Fingerprint),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BindingKind {
    /// The task was granted the secret; the binding outlives the task.
    Granted,
    /// Auto mode: the task used the unbound secret first; the binding ends with the task.
    Auto,
}

/// A planted fake credential.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Decoy {
    /// The task whose environment it was planted in: its own uses are expected.
    pub(super) planted_in: Option<TaskRef>,
}

/// The tasks a secret belongs to. Invariant: `auto` is only set while `granted` is empty and
/// only to an active task (it is released when the task ends).
#[derive(Debug, Default)]
pub(super) struct Binding {
    /// Tasks granted the secret, oldest first; a new grant drops the ones already over.
    granted: Vec<TaskRef>,
    auto: Option<TaskRef>,
}

impl Binding {
    pub(super) fn is_owner(&self, task: TaskRef) -> bool {
        self.auto == Some(task) || self.granted.contains(&task)
    }

    pub(super) fn is_granted(&self) -> bool {
        !self.granted.is_empty()
    }

    /// An active task the secret belongs to.
    pub(super) fn active_owner(&self, tasks: &Tasks) -> Option<TaskRef> {
        self.active_owners(tasks).next()
    }

    /// Every active task the secret belongs to, oldest grant first.
    pub(super) fn active_owners<'a>(&'a self, tasks: &'a Tasks) -> impl Iterator<Item = TaskRef> + 'a {
        self.auto.into_iter().chain(self.granted.iter().copied()).filter(|&task| tasks.is_active(task))
    }

    /// The latest task granted the secret, when every task granted it is over.
    pub(super) fn finished_grantee(&self, tasks: &Tasks) -> Option<TaskRef> {
        match self.granted.iter().any(|&task| tasks.is_active(task)) {
            true => None,
            false => self.granted.last().copied(),
        }
    }

    fn is_bound(&self) -> bool {
        self.auto.is_some() || !self.granted.is_empty()
    }
}

#[derive(Debug)]
pub(super) struct Secret {
    id: Option<SecretId>,
    name: String,
    fingerprint: Option<Fingerprint>,
    pub(super) binding: Binding,
    /// A decoy, and the task it was planted in (none for a decoy file: every task is foreign).
    pub(super) decoy: Option<Decoy>,
    /// The name its baseline is kept under (see [`Secrets::baseline_name`]), made once.
    baseline: String,
    /// Distinct processes that used it.
    processes: u64,
    /// Distinct tasks (lifetimes) whose processes used it.
    tasks: BTreeSet<TaskRef>,
}

impl Secret {
    pub(super) fn name(&self) -> &str {
        &self.name
    }

    fn label(&self) -> SecretLabel {
        SecretLabel {
            id: self.id,
            name: self.name.clone(),
            fingerprint_prefix: self.fingerprint.map(|fingerprint| fingerprint.prefix()),
        }
    }

    /// Takes over what the engine learnt about the same value under its fingerprint.
    fn absorb(&mut self, other: Secret) {
        let Secret { id: _, name: _, fingerprint: _, binding, decoy, baseline: _, processes, tasks } = other;
        self.decoy = self.decoy.or(decoy);
        for task in binding.granted {
            if !self.binding.granted.contains(&task) {
                self.binding.granted.push(task);
            }
        }
        if self.binding.granted.is_empty() {
            self.binding.auto = self.binding.auto.or(binding.auto);
        } else {
            self.binding.auto = None;
        }
        self.processes += processes;
        self.tasks.extend(tasks);
    }
}

#[derive(Debug, Default)]
pub(super) struct Secrets {
    records: HashMap<SecretKey, Secret>,
    /// Fingerprints of watched secrets, so that their values are recognised in environments.
    watched_values: HashMap<Fingerprint, SecretId>,
}

impl Secrets {
    pub(super) fn watch(&mut self, spec: &SecretSpec) {
        // The kernel matches file secrets by inode and reports the id: the kind is not needed here.
        let SecretSpec { id, name, kind: _, fingerprint, decoy } = spec;
        let key = SecretKey::Watched(*id);
        let seen_as_value = fingerprint.and_then(|fingerprint| {
            self.watched_values.insert(fingerprint, *id);
            self.records.remove(&SecretKey::Value(fingerprint))
        });
        let record = self.records.entry(key).or_insert_with(|| Secret::new(key, name));
        record.name.clone_from(name);
        record.baseline = format!("file:{name}");
        record.fingerprint = *fingerprint;
        if *decoy {
            record.decoy = Some(Decoy { planted_in: None });
        }
        if let Some(seen) = seen_as_value {
            record.absorb(seen);
        }
    }

    /// The key of a value the engine already knows (watched, granted, registered, or seen in an
    /// environment), if this fingerprint is one.
    pub(super) fn known(&self, fingerprint: Fingerprint) -> Option<SecretKey> {
        let key = self.key_of(fingerprint);
        self.records.contains_key(&key).then_some(key)
    }

    /// The key of a value seen by its fingerprint.
    pub(super) fn key_of(&self, fingerprint: Fingerprint) -> SecretKey {
        match self.watched_values.get(&fingerprint) {
            Some(&id) => SecretKey::Watched(id),
            None => SecretKey::Value(fingerprint),
        }
    }

    /// The current key of a secret: a value keyed by fingerprint may have been watched since.
    pub(super) fn canonical(&self, key: SecretKey) -> SecretKey {
        match key {
            SecretKey::Value(fingerprint) => self.key_of(fingerprint),
            SecretKey::Watched(_) => key,
        }
    }

    /// Creates the record of a secret first met in a grant or a use; `name` labels it until the
    /// daemon announces it.
    pub(super) fn ensure(&mut self, key: SecretKey, name: &str) {
        let key = self.canonical(key);
        self.records.entry(key).or_insert_with(|| Secret::new(key, name));
    }

    pub(super) fn get(&self, key: SecretKey) -> Option<&Secret> {
        self.records.get(&self.canonical(key))
    }

    pub(super) fn binding(&self, key: SecretKey) -> Option<&Binding> {
        self.get(key).map(|secret| &secret.binding)
    }

    pub(super) fn label(&self, key: SecretKey) -> SecretLabel {
        let key = self.canonical(key);
        match self.records.get(&key) {
            Some(secret) => secret.label(),
            None => Secret::new(key, "").label(),
        }
    }

    pub(super) fn sprawl(&self, key: SecretKey) -> Option<Sprawl> {
        self.get(key).map(|secret| Sprawl { processes: secret.processes, tasks: secret.tasks.len() as u64 })
    }

    /// Grants the secret to `task`. Returns the task whose auto binding gave way, if any: an
    /// explicit grant is policy and wins over a first use.
    pub(super) fn grant(&mut self, key: SecretKey, task: TaskRef, tasks: &Tasks) -> Option<TaskRef> {
        let binding = &mut self.record_mut(key).binding;
        binding.granted.retain(|&granted| tasks.is_active(granted));
        if !binding.granted.contains(&task) {
            binding.granted.push(task);
        }
        binding.auto.take()
    }

    /// Whether a grant by environment variable name may bind this value to `task`: no other active
    /// task owns it.
    pub(super) fn grantable_to(&self, key: SecretKey, task: TaskRef, tasks: &Tasks) -> bool {
        self.binding(key).and_then(|binding| binding.active_owner(tasks)).is_none_or(|owner| owner == task)
    }

    /// Auto mode: binds an unbound secret to the task using it. Returns whether it did.
    pub(super) fn claim(&mut self, key: SecretKey, task: TaskRef) -> bool {
        let binding = &mut self.record_mut(key).binding;
        if binding.is_bound() {
            return false;
        }
        binding.auto = Some(task);
        true
    }

    /// Releases the auto bindings of a task that is over, in key order.
    pub(super) fn release(&mut self, task: TaskRef) -> Vec<SecretKey> {
        let mut released: Vec<SecretKey> = self
            .records
            .iter_mut()
            .filter(|(_, secret)| secret.binding.auto == Some(task))
            .map(|(&key, secret)| {
                secret.binding.auto = None;
                key
            })
            .collect();
        released.sort_unstable();
        released
    }

    /// Counts a use for sprawl: `new_process` when this process had not used it before.
    pub(super) fn record_use(&mut self, key: SecretKey, task: Option<TaskRef>, new_process: bool) {
        let secret = self.record_mut(key);
        secret.processes += u64::from(new_process);
        secret.tasks.extend(task);
    }

    /// The binding of every watched secret (files, by id).
    pub(super) fn watched(&self) -> impl Iterator<Item = (SecretId, &Secret)> {
        self.records.iter().filter_map(|(key, secret)| match key {
            SecretKey::Watched(id) => Some((*id, secret)),
            SecretKey::Value(_) => None,
        })
    }

    /// The name a secret's baseline is kept under, the same across restarts: a file by its path,
    /// any other value by its keyed fingerprint.
    pub(super) fn baseline_name(&self, key: SecretKey) -> Option<&str> {
        self.get(key).map(|secret| secret.baseline.as_str())
    }

    /// Marks a value as a decoy planted in `task`'s environment.
    pub(super) fn plant_decoy(&mut self, key: SecretKey, task: TaskRef) {
        self.record_mut(key).decoy = Some(Decoy { planted_in: Some(task) });
    }

    pub(super) fn decoy(&self, key: SecretKey) -> Option<Decoy> {
        self.get(key).and_then(|secret| secret.decoy)
    }

    /// Secrets bound to a task, explicitly or automatically.
    pub(super) fn bound(&self) -> usize {
        self.records.values().filter(|secret| secret.binding.is_bound()).count()
    }

    pub(super) fn len(&self) -> usize {
        self.records.len()
    }

    fn record_mut(&mut self, key: SecretKey) -> &mut Secret {
        let key = self.canonical(key);
        self.records.entry(key).or_insert_with(|| Secret::new(key, ""))
    }
}

impl Secret {
    /// A record named `name`, or by its key when the name is not known.
    fn new(key: SecretKey, name: &str) -> Self {
        let (id, fingerprint) = match key {
            SecretKey::Watched(id) => (Some(id), None),
            SecretKey::Value(fingerprint) => (None, Some(fingerprint)),
        };
        let name = match (name, key) {
            ("", SecretKey::Watched(id)) => format!("secret {}", id.0),
            ("", SecretKey::Value(fingerprint)) => format!("value {}", fingerprint.prefix()),
            (name, _) => name.to_owned(),
        };
        let baseline = match key {
            SecretKey::Watched(_) => format!("file:{name}"),
            SecretKey::Value(fingerprint) => format!("value:{fingerprint}"),
        };
        Self { id, name, fingerprint, binding: Binding::default(), decoy: None, baseline, processes: 0, tasks: BTreeSet::new() }
    }
}
