//! The daemon's TOML config. Every key is optional; [`Config::default`] is what `credwatch run`
//! uses without a config file. Unknown keys, wrong types and invalid values are errors that
//! name the file, the line and the key.
//!
//! ```toml
//! mode = "auto"                          # or "enforce"
//! state_dir = "/var/lib/credwatch"
//! key_file = "/etc/credwatch/fleet.key"  # fleet-wide fingerprint key; default <state_dir>/host.key
//! host = "node-1"                        # name in audit records and alerts; default: the hostname
//! [catalogue]
//! defaults = true                        # false replaces the built-in catalogue
//! files = ["~/.myapp/token", "/etc/myapp/*.key"]
//! exclude = ["~/.myapp/*.pub", "*.example"]
//! env = ["MYAPP_*_KEY"]
//! dotenv_roots = ["/srv/agents"]
//! dotenv_depth = 2
//! homes = ["/home/agent"]
//! [actions]
//! cross_task_reuse = ["kill_process", "revoke"]
//! [metrics]
//! listen = "127.0.0.1:9477"              # `enabled = false` turns /metrics off
//! allow_remote = false                   # required for a non-loopback address
//! [audit]
//! path = "/var/log/credwatch/audit.jsonl"
//! max_bytes = 67108864                   # rotated before it grows past this
//! max_files = 8                          # files kept, the current one included
//! [alerts]
//! alertmanager_url = "http://127.0.0.1:9093"
//! webhook_url = "http://siem.example/credwatch"
//! min_severity = "medium"                # findings below are audited, not alerted on
//! queue = 1024                           # per sink, while its endpoint is down
//! [revoke]
//! url = "http://vault-relay.example/revoke"   # needed by the `revoke` action
//! queue = 1024
//! ```

use std::{
    collections::BTreeMap,
    net::SocketAddr,
    ops::Range,
    path::{Path, PathBuf},
};

use serde::Deserialize;
use toml::{
    de::{DeTable, DeValue},
    Spanned,
};

use monitor_common::{event::exec::CaptureLimits, listers::LISTERS_MAX};

use crate::{
    actions::plan::{Action, ActionPlan},
    api::ApiConfig,
    catalogue::{
        pattern::{ExcludePattern, NamePattern, PathPattern},
        CatalogueConfig,
    },
    daemon::DaemonConfig,
    egress::EgressConfig,
    secrets::{decoys::DecoyConfig, http::TlsConfig},
    sensors::{listers::HarvestConfig, sizes::MapSizeOverrides},
    daemon::control::duration_text,
    engine::{BaselineConfig, EngineConfig, Rule, Severity},
    export::{audit::AuditConfig, http::Endpoint, server::MetricsConfig, AlertsConfig, ExportConfig, RevokeConfig},
};

/// The deepest project root search allowed: each level multiplies the directories watched.
pub const MAX_DOTENV_DEPTH: u32 = 8;
/// Bounds of `[audit] max_bytes`, `max_files` and the sinks' `queue`.
const AUDIT_BYTES: std::ops::RangeInclusive<u64> = 4096..=1 << 40;
const MAX_AUDIT_FILES: u32 = 1000;
const MAX_QUEUE: usize = 1 << 20;
/// The most entries a `[maps]` size may ask for (the largest `kernel.pid_max`).
const MAX_MAP_ENTRIES: u32 = 1 << 22;

/// How bindings are made.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// A secret is bound to the first task that uses it; use outside any task is counted.
    #[default]
    Auto,
    /// Only secrets granted to a task are bound; the rules' actions apply.
    Enforce,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    pub mode: Mode,
    /// Where the daemon keeps its state, the host key among it.
    pub state_dir: PathBuf,
    /// A fingerprint key shared by a fleet, so that the same secret seen on two hosts has the
    /// same fingerprint; `None` uses `<state_dir>/host.key`, created on first start.
    pub key_file: Option<PathBuf>,
    pub catalogue: CatalogueConfig,
    /// The task API's socket and who may use it.
    pub api: ApiConfig,
    /// What each rule does besides publishing its findings.
    pub actions: ActionPlan,
    /// Kernel map sizes replacing the host's defaults.
    pub maps: MapSizeOverrides,
    /// When a secret's baseline is learned, and what is a burst.
    pub baseline: BaselineConfig,
    /// Decoy credentials to plant, and the scanners whose touches are not reported.
    pub decoys: DecoyConfig,
    /// How much of an exec's command line and environment the kernel captures.
    pub capture: CaptureLimits,
    /// Credentials in HTTP requests sent over TLS.
    pub tls: TlsConfig,
    /// The egress proxy that tasks' HTTP(S) requests go through.
    pub egress: EgressConfig,
    /// The executables of procps `ps`, which read environments only to list processes.
    pub harvest: HarvestConfig,
    /// Metrics, audit log, alert sinks and the revocation webhook.
    pub export: ExportConfig,
}

impl Config {
    /// The sections the daemon owns.
    pub fn daemon(&self) -> DaemonConfig {
        DaemonConfig {
            engine: EngineConfig {
                auto_mode: self.mode == Mode::Auto,
                baseline: self.baseline,
                decoy_ignore: self.decoys.ignore.clone(),
            },
            decoys: self.decoys.clone(),
            capture: self.capture,
            tls: self.tls.clone(),
            egress: self.egress.clone(),
            harvest: self.harvest.clone(),
            state_dir: self.state_dir.clone(),
            key_file: self.key_file.clone(),
            catalogue: self.catalogue.clone(),
            actions: self.actions.clone(),
            maps: self.maps,
            host: self.export.host.clone(),
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Self {
            mode: Mode::default(),
            state_dir: PathBuf::from("/var/lib/credwatch"),
            key_file: None,
            catalogue: CatalogueConfig::default(),
            api: ApiConfig::default(),
            actions: ActionPlan::default(),
            maps: MapSizeOverrides::default(),
            baseline: BaselineConfig::default(),
            decoys: DecoyConfig::default(),
            capture: CaptureLimits::MAX,
            tls: TlsConfig::default(),
            egress: EgressConfig::default(),
            harvest: HarvestConfig::default(),
            export: ExportConfig::default(),
        }
    }
}


#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// `key` is where the error is, e.g. `catalogue.files[1]`, when it could be told.
    #[error("{}:{line}: {}{message}", path.display(), key.as_ref().map(|key| format!("{key}: ")).unwrap_or_default())]
    Invalid { path: PathBuf, line: usize, key: Option<String>, message: String },
}

impl Config {
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text =
            std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.to_owned(), source })?;
        Self::parse(&text, path)
    }

    /// Parses the text of a config file; `path` only names it in errors.
    pub fn parse(text: &str, path: &Path) -> Result<Self, ConfigError> {
        let raw: RawConfig = toml::from_str(text).map_err(|error| {
            let span = error.span().unwrap_or(0..0);
            ConfigError::Invalid {
                path: path.to_owned(),
                line: line_of(text, span.start),
                key: key_at(text, &span),
                message: error.message().to_owned(),
            }
        })?;
        raw.validate().map_err(|Invalid { key, span, message }| ConfigError::Invalid {
            path: path.to_owned(),
            line: line_of(text, span.start),
            key: Some(key),
            message,
        })
    }
}

/// The file as written, before the values are checked; spans locate semantic errors.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    mode: Option<Mode>,
    state_dir: Option<Spanned<String>>,
    key_file: Option<Spanned<String>>,
    catalogue: Option<RawCatalogue>,
    api: Option<ApiConfig>,
    /// Rule name → action names.
    actions: Option<BTreeMap<Spanned<String>, Vec<Spanned<String>>>>,
    host: Option<Spanned<String>>,
    metrics: Option<RawMetrics>,
    audit: Option<RawAudit>,
    alerts: Option<RawAlerts>,
    revoke: Option<RawRevoke>,
    /// Map name → entries.
    maps: Option<BTreeMap<Spanned<String>, Spanned<u32>>>,
    baseline: Option<RawBaseline>,
    decoys: Option<RawDecoys>,
    exec: Option<RawExec>,
    tls: Option<RawTls>,
    egress: Option<RawEgress>,
    harvest: Option<RawHarvest>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table")]
struct RawHarvest {
    listers: Option<Vec<Spanned<String>>>,
}

impl RawHarvest {
    fn validate(self) -> Result<HarvestConfig, Invalid> {
        let Some(listers) = self.listers else {
            return Ok(HarvestConfig::default());
        };
        if let Some(extra) = listers.get(LISTERS_MAX) {
            return Err(Invalid {
                key: format!("harvest.listers[{LISTERS_MAX}]"),
                span: extra.span(),
                message: format!("at most {LISTERS_MAX} listers"),
            });
        }
        Ok(HarvestConfig { listers: each("harvest.listers", Some(listers), check_absolute)? })
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table")]
struct RawEgress {
    enabled: Option<bool>,
    listen: Option<Spanned<String>>,
    ports: Option<Vec<Spanned<u16>>>,
    upstream_ca: Option<Spanned<String>>,
    body_limit: Option<Spanned<usize>>,
    body_wait_ms: Option<Spanned<u64>>,
    /// Name → address.
    hosts: Option<BTreeMap<Spanned<String>, Spanned<String>>>,
}

impl RawEgress {
    fn validate(self) -> Result<EgressConfig, Invalid> {
        let Self { enabled, listen, ports, upstream_ca, body_limit, body_wait_ms, hosts } = self;
        let default = EgressConfig::default();
        let listen = match listen {
            None => default.listen,
            Some(listen) => {
                let invalid = |message| Invalid { key: "egress.listen".into(), span: listen.span(), message };
                let address: SocketAddr = listen
                    .get_ref()
                    .parse()
                    .map_err(|_| invalid(format!("{:?} is not an address like 127.0.0.1:3129", listen.get_ref())))?;
                // The kernel redirects only to IPv4 loopback (and the same port on ::1).
                if address.ip() != std::net::Ipv4Addr::LOCALHOST {
                    return Err(invalid(format!("{address}: the proxy listens on 127.0.0.1 only")));
                }
                address
            }
        };
        let ports = match ports {
            None => default.ports,
            Some(ports) => ports
                .into_iter()
                .map(|port| match *port.get_ref() {
                    0 => Err(Invalid { key: "egress.ports".into(), span: port.span(), message: "port 0 is not a port".into() }),
                    number => Ok(number),
                })
                .collect::<Result<_, _>>()?,
        };
        let hosts = hosts
            .unwrap_or_default()
            .into_iter()
            .map(|(name, address)| {
                let key = format!("egress.hosts.{}", name.get_ref());
                let ip = address.get_ref().parse().map_err(|_| Invalid {
                    key,
                    span: address.span(),
                    message: format!("{:?} is not an IP address", address.get_ref()),
                })?;
                Ok((name.get_ref().to_ascii_lowercase(), ip))
            })
            .collect::<Result<_, Invalid>>()?;
        Ok(EgressConfig {
            enabled: enabled.unwrap_or(default.enabled),
            listen,
            ports,
            upstream_ca: upstream_ca.map(|path| absolute_path("egress.upstream_ca", &path)).transpose()?,
            body_limit: body_limit.map_or(default.body_limit, |limit| *limit.get_ref()),
            body_wait: body_wait_ms.map_or(default.body_wait, |wait| std::time::Duration::from_millis(*wait.get_ref())),
            hosts,
        })
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table")]
struct RawTls {
    enabled: Option<bool>,
    cookies: Option<Vec<Spanned<String>>>,
}

impl RawTls {
    fn validate(self) -> Result<TlsConfig, Invalid> {
        let Self { enabled, cookies } = self;
        // A cookie name is an HTTP token: no separators, no spaces.
        let cookies = each("tls.cookies", cookies, |name| {
            let token = !name.is_empty() && name.bytes().all(|byte| byte.is_ascii_graphic() && !b"()<>@,;:\\\"/[]?={}".contains(&byte));
            match token {
                true => Ok(name.to_owned()),
                false => Err(format!("{name:?} is not a cookie name")),
            }
        })?;
        Ok(TlsConfig { enabled: enabled.unwrap_or(true), cookies })
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table")]
struct RawExec {
    argv_bytes: Option<Spanned<u32>>,
    env_bytes: Option<Spanned<u32>>,
}

impl RawExec {
    fn validate(self) -> Result<CaptureLimits, Invalid> {
        let Self { argv_bytes, env_bytes } = self;
        let max = CaptureLimits::MAX;
        Ok(CaptureLimits {
            argv: in_range("exec.argv_bytes", argv_bytes, 64..=max.argv)?.unwrap_or(max.argv),
            env: in_range("exec.env_bytes", env_bytes, 256..=max.env)?.unwrap_or(max.env),
        })
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table")]
struct RawDecoys {
    files: Option<Vec<Spanned<String>>>,
    ignore: Option<Vec<Spanned<String>>>,
}

impl RawDecoys {
    fn validate(self) -> Result<DecoyConfig, Invalid> {
        let Self { files, ignore } = self;
        let files = each("decoys.files", files, |text| {
            let relative = text.strip_prefix("~/").or_else(|| text.strip_prefix('/'));
            match relative {
                None => Err(format!("{text:?} must be absolute or start with ~/")),
                Some(_) if text.contains(['*', '?', '[']) => Err(format!("{text:?}: a decoy is one file, not a pattern")),
                Some(rest) if rest.split('/').any(|part| matches!(part, "" | "." | "..")) => {
                    Err(format!("{text:?} is not a plain path"))
                }
                Some(_) => Ok(text.to_owned()),
            }
        })?;
        let ignore = each("decoys.ignore", ignore, |text| match text.starts_with('/') {
            true => Ok(text.to_owned()),
            false => Err(format!("{text:?} must be an executable's absolute path")),
        })?;
        Ok(DecoyConfig { files, ignore })
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table")]
struct RawBaseline {
    learn_for: Option<Spanned<String>>,
    learn_uses: Option<Spanned<u64>>,
    burst_factor: Option<Spanned<u64>>,
    burst_floor: Option<Spanned<u64>>,
}

impl RawBaseline {
    fn validate(self) -> Result<BaselineConfig, Invalid> {
        let Self { learn_for, learn_uses, burst_factor, burst_floor } = self;
        let default = BaselineConfig::default();
        let learn_ns = match learn_for {
            Some(text) => duration_text::parse(text.get_ref())
                .map(|duration| duration.as_nanos() as u64)
                .map_err(|message| Invalid { key: "baseline.learn_for".into(), span: text.span(), message })?,
            None => default.learn_ns,
        };
        Ok(BaselineConfig {
            learn_ns,
            learn_uses: in_range("baseline.learn_uses", learn_uses, 1..=1 << 32)?.unwrap_or(default.learn_uses),
            burst_factor: in_range("baseline.burst_factor", burst_factor, 2..=1000)?.unwrap_or(default.burst_factor),
            burst_floor: in_range("baseline.burst_floor", burst_floor, 1..=1 << 32)?.unwrap_or(default.burst_floor),
        })
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table")]
struct RawMetrics {
    enabled: Option<bool>,
    listen: Option<Spanned<String>>,
    allow_remote: Option<bool>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table")]
struct RawAudit {
    enabled: Option<bool>,
    path: Option<Spanned<String>>,
    max_bytes: Option<Spanned<u64>>,
    max_files: Option<Spanned<u32>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table")]
struct RawAlerts {
    alertmanager_url: Option<Spanned<String>>,
    webhook_url: Option<Spanned<String>>,
    min_severity: Option<Severity>,
    queue: Option<Spanned<usize>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table")]
struct RawRevoke {
    url: Spanned<String>,
    queue: Option<Spanned<usize>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table")]
struct RawCatalogue {
    defaults: Option<bool>,
    files: Option<Vec<Spanned<String>>>,
    exclude: Option<Vec<Spanned<String>>>,
    env: Option<Vec<Spanned<String>>>,
    dotenv_roots: Option<Vec<Spanned<String>>>,
    dotenv_depth: Option<Spanned<u32>>,
    homes: Option<Vec<Spanned<String>>>,
}

/// A value that parsed but means nothing valid.
struct Invalid {
    key: String,
    span: Range<usize>,
    message: String,
}

impl RawConfig {
    fn validate(self) -> Result<Config, Invalid> {
        let Self {
            mode,
            state_dir,
            key_file,
            catalogue,
            api,
            actions,
            host,
            metrics,
            audit,
            alerts,
            revoke,
            maps,
            baseline,
            decoys,
            exec,
            tls,
            egress,
            harvest,
        } = self;
        let default = Config::default();
        if revoke.is_none() {
            if let Some((key, span)) = actions.iter().flatten().find_map(|(rule, actions)| {
                let index = actions.iter().position(|action| action.get_ref() == Action::Revoke.name())?;
                Some((format!("actions.{}[{index}]", rule.get_ref()), actions[index].span()))
            }) {
                return Err(Invalid { key, span, message: "the revoke action needs a [revoke] url to POST to".into() });
            }
        }
        let export = ExportConfig {
            host: host.map(validate_host).transpose()?.unwrap_or(default.export.host),
            metrics: metrics.map_or(Ok(default.export.metrics), RawMetrics::validate)?,
            audit: audit.map_or(Ok(default.export.audit), RawAudit::validate)?,
            alerts: alerts.map(RawAlerts::validate).transpose()?.unwrap_or_default(),
            revoke: revoke.map(RawRevoke::validate).transpose()?,
        };
        Ok(Config {
            mode: mode.unwrap_or(default.mode),
            state_dir: state_dir.map(|dir| absolute_path("state_dir", &dir)).transpose()?.unwrap_or(default.state_dir),
            key_file: key_file.map(|file| absolute_path("key_file", &file)).transpose()?,
            catalogue: catalogue.map(RawCatalogue::validate).transpose()?.unwrap_or_default(),
            api: api.unwrap_or_default(),
            actions: actions.map(validate_actions).transpose()?.unwrap_or_default(),
            maps: maps.map(validate_maps).transpose()?.unwrap_or_default(),
            baseline: baseline.map(RawBaseline::validate).transpose()?.unwrap_or_default(),
            decoys: decoys.map(RawDecoys::validate).transpose()?.unwrap_or_default(),
            capture: exec.map(RawExec::validate).transpose()?.unwrap_or(CaptureLimits::MAX),
            tls: tls.map(RawTls::validate).transpose()?.unwrap_or_default(),
            egress: egress.map(RawEgress::validate).transpose()?.unwrap_or_default(),
            harvest: harvest.map(RawHarvest::validate).transpose()?.unwrap_or_default(),
            export,
        })
    }
}

/// A name for this machine in records and alert labels: printable, no spaces.
fn validate_host(host: Spanned<String>) -> Result<String, Invalid> {
    let name = host.get_ref();
    if name.is_empty() || name.len() > 253 || !name.chars().all(|c| c.is_ascii_graphic()) {
        return Err(Invalid {
            key: "host".into(),
            span: host.span(),
            message: format!("{name:?} is not a host name (1 to 253 printable ASCII characters, no spaces)"),
        });
    }
    Ok(host.into_inner())
}

impl RawMetrics {
    fn validate(self) -> Result<Option<MetricsConfig>, Invalid> {
        let Self { enabled, listen, allow_remote } = self;
        if enabled == Some(false) {
            return Ok(None);
        }
        let Some(listen) = listen else { return Ok(Some(MetricsConfig::default())) };
        let invalid = |message| Invalid { key: "metrics.listen".into(), span: listen.span(), message };
        let address: SocketAddr = listen.get_ref().parse().map_err(|_| {
            invalid(format!("{:?} is not an address like 127.0.0.1:9477 or [::1]:9477", listen.get_ref()))
        })?;
        if !address.ip().is_loopback() && allow_remote != Some(true) {
            return Err(invalid(format!(
                "{address} is not a loopback address; set allow_remote = true to serve metrics to other hosts"
            )));
        }
        Ok(Some(MetricsConfig { listen: address }))
    }
}

impl RawAudit {
    fn validate(self) -> Result<Option<AuditConfig>, Invalid> {
        let Self { enabled, path, max_bytes, max_files } = self;
        if enabled == Some(false) {
            return Ok(None);
        }
        let default = AuditConfig::default();
        Ok(Some(AuditConfig {
            path: path.map(|path| absolute_path("audit.path", &path)).transpose()?.unwrap_or(default.path),
            max_bytes: in_range("audit.max_bytes", max_bytes, AUDIT_BYTES)?.unwrap_or(default.max_bytes),
            max_files: in_range("audit.max_files", max_files, 2..=MAX_AUDIT_FILES)?.unwrap_or(default.max_files),
        }))
    }
}

impl RawAlerts {
    fn validate(self) -> Result<AlertsConfig, Invalid> {
        let Self { alertmanager_url, webhook_url, min_severity, queue } = self;
        let default = AlertsConfig::default();
        Ok(AlertsConfig {
            alertmanager: alertmanager_url.map(|url| endpoint("alerts.alertmanager_url", &url)).transpose()?,
            webhook: webhook_url.map(|url| endpoint("alerts.webhook_url", &url)).transpose()?,
            min_severity: min_severity.unwrap_or(default.min_severity),
            queue: in_range("alerts.queue", queue, 1..=MAX_QUEUE)?.unwrap_or(default.queue),
        })
    }
}

impl RawRevoke {
    fn validate(self) -> Result<RevokeConfig, Invalid> {
        let Self { url, queue } = self;
        Ok(RevokeConfig {
            url: endpoint("revoke.url", &url)?,
            queue: in_range("revoke.queue", queue, 1..=MAX_QUEUE)?.unwrap_or(crate::export::SINK_QUEUE),
        })
    }
}

fn endpoint(key: &str, url: &Spanned<String>) -> Result<Endpoint, Invalid> {
    Endpoint::parse(url.get_ref()).map_err(|message| Invalid { key: key.to_owned(), span: url.span(), message })
}

/// An optional number, which must lie in `range`.
fn in_range<T: PartialOrd + std::fmt::Display + Copy>(
    key: &str,
    value: Option<Spanned<T>>,
    range: std::ops::RangeInclusive<T>,
) -> Result<Option<T>, Invalid> {
    match value {
        Some(value) if !range.contains(value.get_ref()) => Err(Invalid {
            key: key.to_owned(),
            span: value.span(),
            message: format!("{} is not between {} and {}", value.get_ref(), range.start(), range.end()),
        }),
        value => Ok(value.map(Spanned::into_inner)),
    }
}

/// `[maps]`: each key a kernel map, each value its entries.
fn validate_maps(table: BTreeMap<Spanned<String>, Spanned<u32>>) -> Result<MapSizeOverrides, Invalid> {
    let mut overrides = MapSizeOverrides::default();
    for (map, entries) in table {
        let key = format!("maps.{}", map.get_ref());
        let entries = in_range(&key, Some(entries), 1..=MAX_MAP_ENTRIES)?.expect("a value was given");
        if !overrides.set(map.get_ref(), entries) {
            let message = format!("unknown map; one of {}", MapSizeOverrides::KEYS.join(", "));
            return Err(Invalid { key, span: map.span(), message });
        }
    }
    Ok(overrides)
}

/// `[actions]`: each key a rule, each value a list of actions.
fn validate_actions(table: BTreeMap<Spanned<String>, Vec<Spanned<String>>>) -> Result<ActionPlan, Invalid> {
    let mut per_rule = BTreeMap::new();
    for (rule_name, actions) in table {
        let key = format!("actions.{}", rule_name.get_ref());
        let rule = Rule::ALL.into_iter().find(|rule| rule.name() == rule_name.get_ref()).ok_or_else(|| Invalid {
            key: key.clone(),
            span: rule_name.span(),
            message: format!(
                "unknown rule; one of {}",
                Rule::ALL.iter().map(|rule| rule.name()).collect::<Vec<_>>().join(", ")
            ),
        })?;
        let parsed = each(&key, Some(actions), |name| {
            serde_json::from_value::<Action>(serde_json::Value::String(name.to_owned()))
                .map_err(|_| format!("unknown action {name:?}; one of alert, kill_process, kill_task, deny, revoke"))
        })?;
        per_rule.insert(rule, parsed);
    }
    Ok(ActionPlan::with(per_rule))
}

impl RawCatalogue {
    fn validate(self) -> Result<CatalogueConfig, Invalid> {
        let Self { defaults, files, exclude, env, dotenv_roots, dotenv_depth, homes } = self;
        let default = CatalogueConfig::default();
        let dotenv_depth = match dotenv_depth {
            Some(depth) if *depth.get_ref() > MAX_DOTENV_DEPTH => {
                return Err(Invalid {
                    key: "catalogue.dotenv_depth".into(),
                    span: depth.span(),
                    message: format!("{} is deeper than the maximum, {MAX_DOTENV_DEPTH}", depth.get_ref()),
                });
            }
            Some(depth) => depth.into_inner(),
            None => default.dotenv_depth,
        };
        Ok(CatalogueConfig {
            defaults: defaults.unwrap_or(default.defaults),
            files: each("catalogue.files", files, |text| PathPattern::parse(text).map_err(|error| error.to_string()))?,
            exclude: each("catalogue.exclude", exclude, |text| {
                ExcludePattern::parse(text).map_err(|error| error.to_string())
            })?,
            env: each("catalogue.env", env, |text| NamePattern::parse(text).map_err(|error| error.to_string()))?,
            dotenv_roots: each("catalogue.dotenv_roots", dotenv_roots, check_absolute)?,
            dotenv_depth,
            homes: homes.map(|homes| each("catalogue.homes", Some(homes), check_absolute)).transpose()?,
        })
    }
}

/// Parses each element of an optional array, naming the first bad one as `key[index]`.
fn each<T>(
    key: &str,
    values: Option<Vec<Spanned<String>>>,
    parse: impl Fn(&str) -> Result<T, String>,
) -> Result<Vec<T>, Invalid> {
    values
        .unwrap_or_default()
        .iter()
        .enumerate()
        .map(|(index, value)| {
            parse(value.get_ref()).map_err(|message| Invalid {
                key: format!("{key}[{index}]"),
                span: value.span(),
                message,
            })
        })
        .collect()
}

fn absolute_path(key: &str, value: &Spanned<String>) -> Result<PathBuf, Invalid> {
    check_absolute(value.get_ref()).map_err(|message| Invalid { key: key.to_owned(), span: value.span(), message })
}

/// An absolute path without `..`, so that what it names cannot depend on the directory the
/// daemon was started from or on symlinks above it.
fn check_absolute(text: &str) -> Result<PathBuf, String> {
    let path = Path::new(text);
    if !path.is_absolute() {
        return Err(format!("path {text:?} must be absolute"));
    }
    if path.components().any(|component| component == std::path::Component::ParentDir) {
        return Err(format!("path {text:?} must not contain `..`"));
    }
    Ok(path.to_owned())
}

/// The 1-based line that byte `offset` of `text` is on.
fn line_of(text: &str, offset: usize) -> usize {
    text.as_bytes()[..offset.min(text.len())].iter().filter(|&&byte| byte == b'\n').count() + 1
}

/// The dotted key (with array indices) whose key or value holds `span`, for errors that
/// toml reports with a span only.
fn key_at(text: &str, span: &Range<usize>) -> Option<String> {
    let document = DeTable::parse(text).ok()?;
    key_in_table(document.get_ref(), span, "")
}

fn key_in_table(table: &DeTable<'_>, span: &Range<usize>, prefix: &str) -> Option<String> {
    table.iter().find_map(|(key, value)| {
        let path = if prefix.is_empty() { key.get_ref().to_string() } else { format!("{prefix}.{}", key.get_ref()) };
        if contains(&key.span(), span) {
            return Some(path);
        }
        key_in_value(value, span, path)
    })
}

fn key_in_value(value: &Spanned<DeValue<'_>>, span: &Range<usize>, path: String) -> Option<String> {
    // A `[table]`'s own span does not cover its keys, so tables are searched whatever their span.
    let inner = match value.get_ref() {
        DeValue::Table(table) => key_in_table(table, span, &path),
        DeValue::Array(array) => {
            array.iter().enumerate().find_map(|(index, item)| key_in_value(item, span, format!("{path}[{index}]")))
        }
        _ => None,
    };
    inner.or_else(|| contains(&value.span(), span).then_some(path))
}

fn contains(outer: &Range<usize>, inner: &Range<usize>) -> bool {
    outer.start <= inner.start && inner.end <= outer.end
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn actions_and_api_are_read_and_bad_names_are_located() {
        let config = parse(
            "[api]\nallow_uids = [0, 1000]\n\n[actions]\nenviron_harvest = [\"kill_task\", \"revoke\"]\n[revoke]\nurl = \"http://127.0.0.1:8200/revoke\"\n",
        )
        .unwrap();
        assert_eq!(config.api.allow_uids, [0, 1000]);
        assert_eq!(config.actions.actions(Rule::EnvironHarvest), [Action::KillTask, Action::Revoke]);
        assert_eq!(config.actions.actions(Rule::CrossTaskReuse), [Action::KillProcess], "unnamed rules keep defaults");
        let error = parse("[actions]\ncross_task_reuse = [\"alert\", \"nuke\"]\n").unwrap_err();
        assert!(error.starts_with("credwatch.toml:2: actions.cross_task_reuse[1]: unknown action \"nuke\""), "{error}");
        let error = parse("\n[actions]\nreuse = [\"alert\"]\n").unwrap_err();
        assert!(error.starts_with("credwatch.toml:3: actions.reuse: unknown rule"), "{error}");
        let error = parse("[api]\nsocket = 5\n").unwrap_err();
        assert!(error.starts_with("credwatch.toml:2: api.socket: "), "{error}");
    }

    #[test]
    fn export_sections_are_read() {
        let text = r#"
host = "node-7"
[metrics]
listen = "0.0.0.0:9477"
allow_remote = true
[audit]
path = "/var/log/cw/audit.jsonl"
max_bytes = 1048576
max_files = 3
[alerts]
alertmanager_url = "http://127.0.0.1:9093"
webhook_url = "http://127.0.0.1:8080/hook"
min_severity = "high"
queue = 16
[revoke]
url = "http://127.0.0.1:8200/revoke"
[actions]
cross_task_reuse = ["kill_process", "revoke"]
"#;
        assert_eq!(
            parse(text).unwrap().export,
            ExportConfig {
                host: "node-7".into(),
                metrics: Some(MetricsConfig { listen: "0.0.0.0:9477".parse().unwrap() }),
                audit: Some(AuditConfig {
                    path: PathBuf::from("/var/log/cw/audit.jsonl"),
                    max_bytes: 1 << 20,
                    max_files: 3
                }),
                alerts: AlertsConfig {
                    alertmanager: Some(Endpoint::parse("http://127.0.0.1:9093").unwrap()),
                    webhook: Some(Endpoint::parse("http://127.0.0.1:8080/hook").unwrap()),
                    min_severity: Severity::High,
                    queue: 16,
                },
                revoke: Some(RevokeConfig {
                    url: Endpoint::parse("http://127.0.0.1:8200/revoke").unwrap(),
                    queue: crate::export::SINK_QUEUE,
                }),
            }
        );
        let off = parse("[metrics]\nenabled = false\n[audit]\nenabled = false\n").unwrap();
        assert_eq!((off.export.metrics, off.export.audit), (None, None));
        let defaults = Config::default().export;
        assert_eq!(defaults.metrics, Some(MetricsConfig { listen: "127.0.0.1:9477".parse().unwrap() }));
        assert_eq!(defaults.audit.unwrap().path, PathBuf::from("/var/log/credwatch/audit.jsonl"));
        assert!(!defaults.host.is_empty());
    }

    #[test]
    fn export_mistakes_are_named_with_their_line() {
        for (text, expected) in [
            (
                "[metrics]\nlisten = \"0.0.0.0:9477\"\n",
                "credwatch.toml:2: metrics.listen: 0.0.0.0:9477 is not a loopback address; set allow_remote = true",
            ),
            (
                "[metrics]\nlisten = \"localhost\"\n",
                "credwatch.toml:2: metrics.listen: \"localhost\" is not an address",
            ),
            (
                "\n[actions]\ncross_task_reuse = [\"alert\", \"revoke\"]\n",
                "credwatch.toml:3: actions.cross_task_reuse[1]: the revoke action needs a [revoke] url",
            ),
            (
                "[alerts]\nwebhook_url = \"https://siem/\"\n",
                "credwatch.toml:2: alerts.webhook_url: \"https://siem/\": https is not",
            ),
            ("[alerts]\nqueue = 0\n", "credwatch.toml:2: alerts.queue: 0 is not between 1 and 1048576"),
            (
                "[alerts]\nmin_severity = \"severe\"\n",
                "credwatch.toml:2: alerts.min_severity: unknown variant `severe`",
            ),
            (
                "[audit]\npath = \"audit.jsonl\"\n",
                "credwatch.toml:2: audit.path: path \"audit.jsonl\" must be absolute",
            ),
            ("[audit]\nmax_files = 1\n", "credwatch.toml:2: audit.max_files: 1 is not between 2 and 1000"),
            ("host = \"my host\"\n", "credwatch.toml:1: host: \"my host\" is not a host name"),
            ("[revoke]\nqueue = 5\n", "credwatch.toml:1: revoke: missing field `url`"),
            ("[maps]\ntask_of = 0\n", "credwatch.toml:2: maps.task_of: 0 is not between 1 and 4194304"),
            ("[baseline]\nlearn_for = \"soon\"\n", "credwatch.toml:2: baseline.learn_for: \"soon\" is not a duration"),
            ("[baseline]\nburst_factor = 1\n", "credwatch.toml:2: baseline.burst_factor: 1 is not between 2 and 1000"),
            ("[decoys]\nfiles = [\"~/.aws/*\"]\n", "credwatch.toml:2: decoys.files[0]: \"~/.aws/*\": a decoy is one file"),
            ("[decoys]\nignore = [\"tar\"]\n", "credwatch.toml:2: decoys.ignore[0]: \"tar\" must be an executable's absolute path"),
            ("[exec]\nenv_bytes = 100000\n", "credwatch.toml:2: exec.env_bytes: 100000 is not between 256 and 65536"),
            ("[tls]\ncookies = [\"a=b\"]\n", "credwatch.toml:2: tls.cookies[0]: \"a=b\" is not a cookie name"),
            ("[egress]\nlisten = \"0.0.0.0:3129\"\n", "credwatch.toml:2: egress.listen: 0.0.0.0:3129: the proxy listens on 127.0.0.1 only"),
            ("[egress]\nports = [443, 0]\n", "credwatch.toml:2: egress.ports: port 0 is not a port"),
            ("[egress.hosts]\n\"a.b\" = \"nope\"\n", "credwatch.toml:2: egress.hosts.a.b: \"nope\" is not an IP address"),
            ("[maps]\nevents = 8\n", "credwatch.toml:2: maps.events: unknown map; one of task_of, holders,"),
            ("[harvest]\nlisters = [\"ps\"]\n", "credwatch.toml:2: harvest.listers[0]: path \"ps\" must be absolute"),
            (
                "[harvest]\nlisters = [\"/1\", \"/2\", \"/3\", \"/4\", \"/5\", \"/6\", \"/7\", \"/8\", \"/9\"]\n",
                "credwatch.toml:2: harvest.listers[8]: at most 8 listers",
            ),
        ] {
            let error = parse(text).unwrap_err();
            assert!(error.starts_with(expected), "{text:?}: {error}");
        }
    }

    fn parse(text: &str) -> Result<Config, String> {
        Config::parse(text, Path::new("credwatch.toml")).map_err(|error| error.to_string())
    }

    #[test]
    fn an_empty_file_is_the_default() {
        assert_eq!(parse("").unwrap(), Config::default());
        assert_eq!(Config::default().mode, Mode::Auto);
        assert!(Config::default().catalogue.defaults);
    }

    #[test]
    fn a_full_file_is_read_into_every_field() {
        let text = r#"
mode = "enforce"
state_dir = "/var/lib/cw"
key_file = "/etc/credwatch/fleet.key"

[catalogue]
defaults = false
files = ["~/.myapp/token", "/etc/myapp/*.key"]
exclude = ["~/.myapp/*.pub", "*.example"]
env = ["MYAPP_*_KEY"]
dotenv_roots = ["/srv/agents"]
dotenv_depth = 3
homes = ["/home/agent"]

[maps]
task_of = 512
watched = 64

[baseline]
learn_for = "2h"
learn_uses = 50

[decoys]
files = ["~/.aws/credentials.old"]
ignore = ["/usr/bin/tar"]

[exec]
env_bytes = 8192

[tls]
cookies = ["session"]

[egress]
listen = "127.0.0.1:3129"
ports = [443, 8443]
upstream_ca = "/etc/credwatch/roots.pem"
body_limit = 4096
body_wait_ms = 20

[egress.hosts]
"API.internal" = "10.0.0.7"

[harvest]
listers = ["/usr/bin/ps", "/opt/procps/bin/ps"]
"#;
        let config = parse(text).unwrap();
        assert_eq!(
            config,
            Config {
                mode: Mode::Enforce,
                state_dir: PathBuf::from("/var/lib/cw"),
                key_file: Some(PathBuf::from("/etc/credwatch/fleet.key")),
                catalogue: CatalogueConfig {
                    defaults: false,
                    files: vec![
                        PathPattern::parse("~/.myapp/token").unwrap(),
                        PathPattern::parse("/etc/myapp/*.key").unwrap()
                    ],
                    exclude: vec![
                        ExcludePattern::parse("~/.myapp/*.pub").unwrap(),
                        ExcludePattern::parse("*.example").unwrap()
                    ],
                    env: vec![NamePattern::parse("MYAPP_*_KEY").unwrap()],
                    dotenv_roots: vec![PathBuf::from("/srv/agents")],
                    dotenv_depth: 3,
                    homes: Some(vec![PathBuf::from("/home/agent")]),
                },
                api: ApiConfig::default(),
                actions: ActionPlan::default(),
                maps: MapSizeOverrides { task_of: Some(512), watched: Some(64), ..MapSizeOverrides::default() },
                baseline: BaselineConfig { learn_ns: 7_200_000_000_000, learn_uses: 50, ..BaselineConfig::default() },
                decoys: DecoyConfig {
                    files: vec!["~/.aws/credentials.old".into()],
                    ignore: vec!["/usr/bin/tar".into()],
                },
                capture: CaptureLimits { argv: CaptureLimits::MAX.argv, env: 8192 },
                tls: TlsConfig { enabled: true, cookies: vec!["session".to_owned()] },
                egress: EgressConfig {
                    enabled: true,
                    listen: "127.0.0.1:3129".parse().unwrap(),
                    ports: vec![443, 8443],
                    upstream_ca: Some(PathBuf::from("/etc/credwatch/roots.pem")),
                    body_limit: 4096,
                    body_wait: std::time::Duration::from_millis(20),
                    hosts: [("api.internal".to_owned(), "10.0.0.7".parse().unwrap())].into(),
                },
                harvest: HarvestConfig { listers: vec!["/usr/bin/ps".into(), "/opt/procps/bin/ps".into()] },
                export: ExportConfig::default(),
            }
        );
    }

    #[test]
    fn a_relative_file_pattern_is_named_with_its_line_and_index() {
        let text = "mode = \"auto\"\n\n[catalogue]\nfiles = [\n  \"~/.myapp/token\",\n  \"myapp/*.key\",\n]\n";
        assert_eq!(
            parse(text).unwrap_err(),
            r#"credwatch.toml:6: catalogue.files[1]: pattern "myapp/*.key" must be absolute or start with ~/"#
        );
    }

    #[test]
    fn a_recursive_pattern_is_refused() {
        let error = parse("[catalogue]\nfiles = [\"/srv/**/.env\"]\n").unwrap_err();
        assert!(
            error.starts_with("credwatch.toml:2: catalogue.files[0]: pattern \"/srv/**/.env\" uses `**`"),
            "{error}"
        );
    }

    #[test]
    fn an_empty_env_pattern_is_refused() {
        assert_eq!(
            parse("[catalogue]\nenv = [\"A_*\", \"\"]\n").unwrap_err(),
            "credwatch.toml:2: catalogue.env[1]: pattern is empty"
        );
    }

    #[test]
    fn an_unknown_key_is_named() {
        let error = parse("mode = \"auto\"\n[catalogue]\ndefaults = true\nfiels = []\n").unwrap_err();
        assert!(error.starts_with("credwatch.toml:4: catalogue.fiels: unknown field `fiels`"), "{error}");
        let error = parse("colour = 1\n").unwrap_err();
        assert!(error.starts_with("credwatch.toml:1: colour: unknown field `colour`"), "{error}");
    }

    #[test]
    fn a_wrong_type_is_named() {
        let error = parse("[catalogue]\n\ndefaults = \"yes\"\n").unwrap_err();
        assert!(
            error.starts_with("credwatch.toml:3: catalogue.defaults: invalid type: string \"yes\", expected a boolean"),
            "{error}"
        );
        let error = parse("[catalogue]\nfiles = [\"/a\", 3]\n").unwrap_err();
        assert!(
            error.starts_with("credwatch.toml:2: catalogue.files[1]: invalid type: integer `3`, expected a string"),
            "{error}"
        );
        let error = parse("catalogue = 5\n").unwrap_err();
        assert!(
            error.starts_with("credwatch.toml:1: catalogue: invalid type: integer `5`, expected a table"),
            "{error}"
        );
        let error = parse("[catalogue]\ndotenv_depth = -1\n").unwrap_err();
        assert!(error.starts_with("credwatch.toml:2: catalogue.dotenv_depth: "), "{error}");
    }

    #[test]
    fn a_bad_mode_is_named() {
        let error = parse("\nmode = \"strict\"\n").unwrap_err();
        assert!(
            error.starts_with("credwatch.toml:2: mode: unknown variant `strict`, expected `auto` or `enforce`"),
            "{error}"
        );
    }

    #[test]
    fn relative_and_parent_paths_are_refused() {
        assert_eq!(
            parse("state_dir = \"var/lib\"\n").unwrap_err(),
            r#"credwatch.toml:1: state_dir: path "var/lib" must be absolute"#
        );
        assert_eq!(
            parse("[catalogue]\nhomes = [\"/home/../etc\"]\n").unwrap_err(),
            r#"credwatch.toml:2: catalogue.homes[0]: path "/home/../etc" must not contain `..`"#
        );
        assert_eq!(
            parse("[catalogue]\ndotenv_depth = 9\n").unwrap_err(),
            "credwatch.toml:2: catalogue.dotenv_depth: 9 is deeper than the maximum, 8"
        );
    }

    #[test]
    fn a_syntax_error_gives_its_line() {
        let error = parse("mode = \"auto\"\n[catalogue\n").unwrap_err();
        assert!(error.starts_with("credwatch.toml:2: "), "{error}");
    }

    #[test]
    fn load_names_a_missing_file() {
        let error = Config::load(Path::new("/nonexistent/credwatch.toml")).unwrap_err().to_string();
        assert!(error.starts_with("cannot read config file /nonexistent/credwatch.toml: "), "{error}");
    }
}
