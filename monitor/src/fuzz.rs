//! The properties that every parser of outside input keeps, one [`Target`] per parser: ring
//! buffer records, config files, task API bodies and routes, recordings for `replay`, catalogue
//! patterns. They are written once, here: the libFuzzer targets in `fuzz/` (`cargo xtask fuzz`)
//! check them on what they generate, and the test below replays the committed corpus and every
//! crash kept in `fuzz/regressions/` through them on the stable toolchain, in `cargo test`.

use std::{
    mem::{offset_of, size_of},
    ops::Range,
    path::{Path, PathBuf},
};

use hyper::{Method, StatusCode};
use monitor_common::event::{
    exec::{ExecBody, ExecCapture},
    exit::ExitBody,
    flags,
    fork::ForkBody,
    harvest::HarvestBody,
    connect::ConnectBody,
    secret_open::SecretOpenBody,
    tls::TlsBody,
    Event as Record, EventHeader, EventKind as RecordKind,
};
use toml::{
    de::{DeTable, DeValue},
    Spanned,
};

use crate::{
    api::{
        json::{parse, Echo},
        routes::route,
    },
    catalogue::pattern::{ExcludePattern, NamePattern, PathPattern},
    cli::replay::{parse_line, replay},
    config::{Config, ConfigError},
    daemon::control::{TaskRequest, TokenRequest},
    engine::{Engine, EngineConfig, Finding, Input},
    event::EventKind,
    sensors::decode::{decode, DecodeError},
};

/// A parser of outside input, with the properties its input must keep.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    RingBufferRecords,
    ConfigFiles,
    TaskApiBodies,
    TaskApiRoutes,
    Recordings,
    CataloguePatterns,
}

/// A property an input broke, in words.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Violation(String);

impl Target {
    pub const ALL: [Self; 6] = [
        Self::RingBufferRecords,
        Self::ConfigFiles,
        Self::TaskApiBodies,
        Self::TaskApiRoutes,
        Self::Recordings,
        Self::CataloguePatterns,
    ];

    /// Its cargo-fuzz target, and its directory in `fuzz/corpus/` and `fuzz/regressions/`.
    pub const fn name(self) -> &'static str {
        match self {
            Self::RingBufferRecords => "ring_buffer_records",
            Self::ConfigFiles => "config_files",
            Self::TaskApiBodies => "task_api_bodies",
            Self::TaskApiRoutes => "task_api_routes",
            Self::Recordings => "recordings",
            Self::CataloguePatterns => "catalogue_patterns",
        }
    }

    /// Runs the parser on `input` and checks what it returned.
    pub fn check(self, input: &[u8]) -> Result<(), Violation> {
        match self {
            Self::RingBufferRecords => ring_buffer_record(input),
            Self::ConfigFiles => config_file(input),
            Self::TaskApiBodies => task_api_body(input),
            Self::TaskApiRoutes => task_api_route(input),
            Self::Recordings => recording(input),
            Self::CataloguePatterns => catalogue_pattern(input),
        }
    }

    /// [`Self::check`] for libFuzzer, which keeps an input that panics as a crash.
    pub fn assert(self, input: &[u8]) {
        if let Err(violation) = self.check(input) {
            panic!("{}: {violation}", self.name());
        }
    }
}

fn ensure(holds: bool, violation: impl FnOnce() -> String) -> Result<(), Violation> {
    if holds {
        Ok(())
    } else {
        Err(Violation(violation()))
    }
}

/// A record that decodes agrees with its bytes; one that does not names what is wrong with them.
fn ring_buffer_record(bytes: &[u8]) -> Result<(), Violation> {
    let header = EventHeader::from_bytes(bytes);
    let kind = header.and_then(|header| RecordKind::from_u32(header.kind));
    match decode(bytes) {
        Ok(event) => {
            let (Some(header), Some(kind)) = (header, kind) else {
                return Err(Violation(format!("a record of {} bytes without a known kind decoded", bytes.len())));
            };
            ensure(event.kind.name() == kind.name(), || {
                format!("a {} record decoded as {}", kind.name(), event.kind.name())
            })?;
            ensure(bytes.len() >= layout_len(kind), || {
                format!("a {} record of {} bytes, shorter than its layout, decoded", kind.name(), bytes.len())
            })?;
            let EventHeader { kind: _, pid, tgid, flags: header_flags, ktime_ns, start_time: _ } = header;
            ensure((event.thread, event.process.tgid, event.ktime_ns) == (pid, tgid, ktime_ns), || {
                format!("the event's thread, process or time is not its header's: {event:?}")
            })?;
            ensure(
                event.truncated == (header_flags & flags::TRUNCATED != 0)
                    && event.read_failed == (header_flags & flags::READ_FAILED != 0),
                || format!("the event's flags are not its header's {header_flags:#x}"),
            )?;
            captured_within(bytes, &event.kind)
        }
        Err(error) => {
            let named = match error {
                DecodeError::NoHeader { len } => header.is_none() && len == bytes.len(),
                DecodeError::UnknownKind { kind: unknown } => {
                    header.is_some_and(|header| header.kind == unknown) && kind.is_none()
                }
                DecodeError::Short { kind: short, len, expected } => {
                    kind.map(RecordKind::name) == Some(short) && len == bytes.len() && expected > len
                }
                // A field is judged only in a record that holds its whole layout.
                DecodeError::Field { kind: named, .. } => {
                    kind.is_some_and(|kind| kind.name() == named && bytes.len() >= layout_len(kind))
                }
            };
            ensure(named, || format!("{} bytes refused with an error that does not fit them: {error}", bytes.len()))
        }
    }
}

/// The size of a record of `kind` up to the end of its body.
fn layout_len(kind: RecordKind) -> usize {
    match kind {
        RecordKind::Exec => size_of::<Record<ExecBody>>(),
        RecordKind::Fork => size_of::<Record<ForkBody>>(),
        RecordKind::Exit => size_of::<Record<ExitBody>>(),
        RecordKind::SecretOpen => size_of::<Record<SecretOpenBody>>(),
        RecordKind::Harvest => size_of::<Record<HarvestBody>>(),
        RecordKind::Connect => size_of::<Record<ConnectBody>>(),
        RecordKind::TlsWrite => size_of::<Record<TlsBody>>(),
    }
}

/// What a record carries past its body (an exec's argument and environment blocks, a TLS
/// write's plaintext) is the bytes its lengths announce, and strings hold no NUL.
fn captured_within(bytes: &[u8], kind: &EventKind) -> Result<(), Violation> {
    let u32_at = |offset: usize| {
        bytes.get(offset..offset + 4).map(|word| u32::from_ne_bytes(word.try_into().expect("4 bytes")))
    };
    let holds = |offset: usize, block: &[u8]| bytes.get(offset..offset + block.len()) == Some(block);
    match kind {
        EventKind::Exec(exec) => {
            let captured =
                exec.captured.as_ref().ok_or_else(|| Violation("an exec decoded without its blocks".into()))?;
            let start = size_of::<Record<ExecBody>>();
            let lengths =
                (u32_at(start + offset_of!(ExecCapture, argv_len)), u32_at(start + offset_of!(ExecCapture, env_len)));
            let blocks = start + size_of::<ExecCapture>();
            ensure(
                lengths == (Some(captured.argv.len() as u32), Some(captured.env.len() as u32))
                    && holds(blocks, &captured.argv)
                    && holds(blocks + captured.argv.len(), &captured.env),
                || format!("an exec's blocks are not the {lengths:?} bytes its record announces"),
            )?;
            let nul = exec.filename.contains('\0') || exec.argv0.contains('\0');
            ensure(!nul, || "an exec's names hold a NUL".into())
        }
        EventKind::TlsWrite(write) => {
            let data =
                write.captured.as_ref().ok_or_else(|| Violation("a TLS write decoded without its plaintext".into()))?;
            let len = u32_at(offset_of!(Record<TlsBody>, body) + offset_of!(TlsBody, len));
            ensure(len == Some(data.len() as u32) && holds(size_of::<Record<TlsBody>>(), data), || {
                format!("a TLS write's {} bytes are not the {len:?} its record announces", data.len())
            })
        }
        EventKind::SecretOpen(open) => {
            ensure(!open.path.contains('\0'), || "a secret open's path holds a NUL".into())
        }
        EventKind::Fork(_) | EventKind::Exit(_) | EventKind::Harvest(_) | EventKind::Connect(_) => Ok(()),
    }
}

/// A config error names a line of the file and, when it names a key, one the file has, written
/// on that line (its name or its value).
fn config_file(bytes: &[u8]) -> Result<(), Violation> {
    // A file that is not UTF-8 fails when it is read, before the parser.
    let Ok(text) = std::str::from_utf8(bytes) else { return Ok(()) };
    let path = Path::new("credwatch.toml");
    let Err(error) = Config::parse(text, path) else { return Ok(()) };
    let shown = error.to_string();
    let ConfigError::Invalid { path: named, line, key, message } = error else {
        return Err(Violation(format!("parsing text failed to read: {shown}")));
    };
    ensure(named == path && !message.is_empty(), || format!("an error without its file or message: {shown}"))?;
    // An editor shows the empty line after a final newline, where an unfinished file ends.
    let lines = text.split('\n').count();
    ensure((1..=lines).contains(&line), || format!("{shown}: the file has {lines} lines"))?;
    ensure(shown.starts_with(&format!("credwatch.toml:{line}: ")), || {
        format!("{shown}: not where line {line} says")
    })?;
    let Some(key) = key else { return Ok(()) };
    let spot = Spot { text, line };
    let named_there = DeTable::parse(text).is_ok_and(|document| spot.names(document.get_ref(), &key));
    ensure(named_there, || format!("{shown}: the file has no key {key:?} on line {line}"))
}

/// A config error's line, in its file.
struct Spot<'t> {
    text: &'t str,
    line: usize,
}

impl Spot<'_> {
    /// Whether `key`, spelt as errors spell it (`catalogue.files[1]`), is a key of `table` or an
    /// element of one, written on this line.
    fn names(&self, table: &DeTable<'_>, key: &str) -> bool {
        table.iter().any(|(name, value)| {
            key.strip_prefix(name.get_ref().as_ref()).is_some_and(|rest| self.names_within(value, rest, name.span()))
        })
    }

    /// Whether `rest` of a key names `value`, or something in it, on this line; `name` is where
    /// the key or element that holds `value` is written.
    fn names_within(&self, value: &Spanned<DeValue<'_>>, rest: &str, name: Range<usize>) -> bool {
        if rest.is_empty() {
            // A table's span can be its header alone, before or after the name (dotted keys).
            let (start, end) = (name.start.min(value.span().start), name.end.max(value.span().end));
            return (self.line_of(start)..=self.line_of(end.saturating_sub(1).max(start))).contains(&self.line);
        }
        match value.get_ref() {
            DeValue::Table(table) => rest.strip_prefix('.').is_some_and(|rest| self.names(table, rest)),
            DeValue::Array(items) => {
                let Some((index, rest)) = rest.strip_prefix('[').and_then(|rest| rest.split_once(']')) else {
                    return false;
                };
                let item = index.parse::<usize>().ok().and_then(|index| items.get(index));
                item.is_some_and(|item| self.names_within(item, rest, item.span()))
            }
            _ => false,
        }
    }

    fn line_of(&self, offset: usize) -> usize {
        self.text.as_bytes()[..offset.min(self.text.len())].iter().filter(|&&byte| byte == b'\n').count() + 1
    }
}

/// A secret is at least this long and has no whitespace; shorter strings can be the words of
/// the messages themselves.
const QUOTABLE: usize = 16;
/// Planted where a token's value goes in the corpus's bodies: no message has it.
const MARKER: &str = "cwfuzz";

/// A task body's refusal is a 400 that says why, and a task accepted reads back as itself once
/// written as the client writes it; a token body's refusal never quotes the body, nor does the
/// token request's Debug.
fn task_api_body(bytes: &[u8]) -> Result<(), Violation> {
    match parse::<TaskRequest>(bytes, Echo::Allowed) {
        Ok(task) => {
            let body =
                serde_json::to_vec(&task).map_err(|error| Violation(format!("{task:?} cannot be written: {error}")))?;
            let read = parse::<TaskRequest>(&body, Echo::Allowed);
            ensure(read.as_ref().ok() == Some(&task), || format!("{task:?} is sent as a body read as {read:?}"))?;
        }
        Err(refused) => ensure(refused.status == StatusCode::BAD_REQUEST && !refused.message.is_empty(), || {
            format!("a task body refused as {}: {:?}", refused.status, refused.message)
        })?,
    }
    let said = match parse::<TokenRequest>(bytes, Echo::Never) {
        Err(refused) => {
            ensure(refused.status == StatusCode::BAD_REQUEST, || {
                format!("a token body refused as {}", refused.status)
            })?;
            format!("{} {}", refused.message, refused.field.unwrap_or_default())
        }
        // The task and the label are the caller's names, not secrets: only the value is hidden.
        Ok(request) => format!("{:?}", TokenRequest { task: String::new(), label: String::new(), ..request }),
    };
    ensure(!said.to_lowercase().contains(MARKER), || format!("a token body's marker is quoted: {said}"))?;
    match strings_in(bytes).into_iter().find(|string| said.contains(string.as_str())) {
        Some(quoted) => Err(Violation(format!("a token body's {quoted:?} is quoted: {said}"))),
        None => Ok(()),
    }
}

/// The JSON strings of `bytes`, keys and values, decoded where they are valid, that a message
/// could contain only by quoting them.
fn strings_in(bytes: &[u8]) -> Vec<String> {
    let mut strings = Vec::new();
    let mut rest = bytes;
    while let Some(open) = rest.iter().position(|&byte| byte == b'"') {
        let mut escaped = false;
        let close = rest[open + 1..].iter().position(|&byte| {
            let closes = byte == b'"' && !escaped;
            escaped = byte == b'\\' && !escaped;
            closes
        });
        let Some(close) = close.map(|close| open + 1 + close) else { break };
        let text = serde_json::from_slice::<String>(&rest[open..=close])
            .unwrap_or_else(|_| String::from_utf8_lossy(&rest[open + 1..close]).into_owned());
        if text.chars().count() >= QUOTABLE && !text.contains(char::is_whitespace) {
            strings.push(text);
        }
        rest = &rest[close + 1..];
    }
    strings
}

/// `METHOD path[?query]`, as a request line starts: only `/v1/` paths route, a refusal is a
/// client error with a message, and a 405 names the methods allowed.
fn task_api_route(bytes: &[u8]) -> Result<(), Violation> {
    let Some((method, target)) = std::str::from_utf8(bytes).ok().and_then(|text| text.split_once(' ')) else {
        return Ok(());
    };
    let Ok(method) = Method::from_bytes(method.as_bytes()) else { return Ok(()) };
    let (path, query) = target.split_once('?').map_or((target, None), |(path, query)| (path, Some(query)));
    match route(&method, path, query) {
        Ok(_) => {
            ensure(path.strip_prefix('/').unwrap_or(path).starts_with("v1/"), || format!("{method} {path} routed"))
        }
        Err(refused) => ensure(
            refused.status.is_client_error()
                && !refused.message.is_empty()
                && (refused.status == StatusCode::METHOD_NOT_ALLOWED) == refused.allow.is_some(),
            || format!("{method} {target} refused as {refused:?}"),
        ),
    }
}

/// Every line that does not parse is reported with its number; every line that does is read
/// back as itself once written again; replaying twice gives the same findings.
fn recording(bytes: &[u8]) -> Result<(), Violation> {
    const FILE: &str = "recording.jsonl";
    let mut engine = Engine::new(EngineConfig::default());
    let (mut findings, mut bad_lines) = (Vec::new(), Vec::new());
    let count = replay(
        FILE,
        bytes,
        &mut engine,
        |finding| {
            findings.push(finding.clone());
            Ok(())
        },
        |bad_line| bad_lines.push(bad_line),
    )
    .map_err(|error| Violation(format!("replaying from memory failed: {error}")))?;
    ensure(count == bad_lines.len(), || format!("{count} bad lines counted, {} reported", bad_lines.len()))?;

    let (mut inputs, mut unparsed) = (Vec::new(), Vec::new());
    for (index, line) in bytes.split_inclusive(|&byte| byte == b'\n').enumerate() {
        match parse_line(line) {
            Ok(Some(input)) => {
                round_trips(&input)?;
                inputs.push(input);
            }
            Ok(None) => {}
            Err(_) => unparsed.push(index + 1),
        }
    }
    let reported: Vec<usize> = bad_lines.iter().map(|bad_line| bad_line.line).collect();
    ensure(reported == unparsed, || format!("lines {unparsed:?} do not parse, lines {reported:?} were reported"))?;
    for bad_line in &bad_lines {
        let shown = bad_line.to_string();
        ensure(
            shown.starts_with(&format!("{FILE}:{}: ", bad_line.line))
                && !bad_line.message.is_empty()
                && !ends_with_position(&bad_line.message),
            || format!("a bad line reported as {shown:?}"),
        )?;
    }

    let mut again = Engine::new(EngineConfig::default());
    let findings_again: Vec<Finding> = inputs.iter().flat_map(|input| again.apply(input).findings).collect();
    ensure(findings_again == findings && again.stats() == engine.stats(), || {
        format!("the same inputs gave {} findings, then {}", findings.len(), findings_again.len())
    })
}

/// An input written as a line reads back as itself, and writing that gives the same line: the
/// recording's encoding is a fixed point after one pass (a line read may hold fields the input
/// ignores or defaults it leaves out, so the first line read is not compared).
fn round_trips(input: &Input) -> Result<(), Violation> {
    let write = |input: &Input| {
        serde_json::to_string(input).map_err(|error| Violation(format!("{input:?} cannot be written: {error}")))
    };
    let line = write(input)?;
    let read =
        parse_line(line.as_bytes()).map_err(|error| Violation(format!("{line} written, then refused: {error}")))?;
    let Some(read) = read else {
        return Err(Violation(format!("{input:?} written as a blank line")));
    };
    ensure(read == *input, || format!("{line} reads back as {read:?}, not {input:?}"))?;
    let again = write(&read)?;
    ensure(again == line, || format!("{line} written again as {again}"))
}

/// serde_json's " at line L column C", which a bad line's message leaves to the line number.
fn ends_with_position(message: &str) -> bool {
    message.rsplit_once(" at line ").and_then(|(_, tail)| tail.split_once(" column ")).is_some_and(|(line, column)| {
        line.parse::<u64>().is_ok() && column.parse::<u64>().is_ok()
    })
}

/// A pattern accepted is written back as given and matches what it spells (`*` standing for
/// itself, `~` for a home); one refused says why.
fn catalogue_pattern(bytes: &[u8]) -> Result<(), Violation> {
    let Ok(text) = std::str::from_utf8(bytes) else { return Ok(()) };
    match PathPattern::parse(text) {
        Ok(pattern) => {
            ensure(pattern.to_string() == text, || format!("{text:?} is written back as {pattern}"))?;
            const HOME: &str = "/home/agent";
            // Not `Path::join`, which an absolute rest (`~//x`) would replace.
            let spelt = match text.strip_prefix("~/") {
                Some(rest) => PathBuf::from(format!("{HOME}/{rest}")),
                None => PathBuf::from(text),
            };
            let matched = pattern.expand(&[PathBuf::from(HOME)]).iter().all(|expanded| expanded.matches(&spelt));
            ensure(matched, || {
                format!("{text:?} does not match {}", spelt.display())
            })?;
        }
        Err(error) => ensure(!error.to_string().is_empty(), || format!("{text:?} refused without a reason"))?,
    }
    if let Ok(pattern) = NamePattern::parse(text) {
        ensure(pattern.to_string() == text && pattern.matches(text.as_bytes()), || {
            format!("name pattern {text:?} is not itself")
        })?;
    }
    if let Err(error) = ExcludePattern::parse(text) {
        ensure(!error.to_string().is_empty(), || format!("exclusion {text:?} refused without a reason"))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::{collections::BTreeSet, fs, panic};

    use super::*;

    fn fuzz_dir() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz")
    }

    /// The entries of `dir`, sorted; a directory that cannot be read fails the test.
    fn entries(dir: &Path) -> Vec<PathBuf> {
        let read = fs::read_dir(dir).unwrap_or_else(|error| panic!("{}: {error}", dir.display()));
        let mut entries: Vec<PathBuf> = read.map(|entry| entry.expect("a directory entry").path()).collect();
        entries.sort();
        entries
    }

    /// The subdirectories of `dir`: one per target (its README.md aside).
    fn subdirectories(dir: &Path) -> Vec<PathBuf> {
        entries(dir).into_iter().filter(|path| path.is_dir()).collect()
    }

    fn name_of(path: &Path) -> String {
        path.file_stem().unwrap_or_default().to_string_lossy().into_owned()
    }

    #[test]
    fn each_target_is_a_libfuzzer_target() {
        let libfuzzer: BTreeSet<String> =
            entries(&fuzz_dir().join("fuzz_targets")).iter().map(|path| name_of(path)).collect();
        let targets: BTreeSet<String> = Target::ALL.iter().map(|target| target.name().to_owned()).collect();
        assert_eq!(libfuzzer, targets);
    }

    /// CI's replay: every input of the corpus and every crash kept as a regression, through its
    /// target's properties. A directory that is missing, empty or of no target fails: a replay of
    /// nothing would pass while checking nothing.
    #[test]
    fn the_corpus_and_the_regressions_keep_their_properties() {
        let mut failures = Vec::new();
        let mut replayed = Vec::new();
        for kind in ["corpus", "regressions"] {
            for dir in subdirectories(&fuzz_dir().join(kind)) {
                let name = name_of(&dir);
                let target = Target::ALL
                    .into_iter()
                    .find(|target| target.name() == name)
                    .unwrap_or_else(|| panic!("{}: no fuzz target has that name", dir.display()));
                let files = entries(&dir);
                assert!(!files.is_empty(), "{} is empty", dir.display());
                for file in &files {
                    let input = fs::read(file).unwrap_or_else(|error| panic!("{}: {error}", file.display()));
                    match panic::catch_unwind(|| target.check(&input)) {
                        Ok(Ok(())) => {}
                        Ok(Err(violation)) => failures.push(format!("{}: {violation}", file.display())),
                        Err(_) => failures.push(format!("{}: panicked (above)", file.display())),
                    }
                }
                replayed.push((kind, target, files.len()));
            }
        }
        for target in Target::ALL {
            assert!(
                replayed.iter().any(|&(kind, replayed, _)| (kind, replayed) == ("corpus", target)),
                "fuzz/corpus/{} is missing",
                target.name()
            );
        }
        eprintln!("replayed {replayed:?}");
        assert!(failures.is_empty(), "{} inputs broke a property:\n{}", failures.len(), failures.join("\n"));
    }
}
