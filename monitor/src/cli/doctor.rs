//! `credwatch doctor`: what this kernel allows, and the sensor tier `run` will use.

use std::{
    io::{self, Write as _},
    process::ExitCode,
};

use serde_json::Value;

use super::socket::{self, SocketArgs};
use crate::doctor::{
    self,
    report::{self, Document, Row},
};

#[derive(Debug, clap::Args)]
pub struct DoctorArgs {
    /// Print the report as JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    /// A running daemon's socket: its kernel maps' failed writes are shown too.
    #[command(flatten)]
    pub api: SocketArgs,
}

#[derive(Debug, thiserror::Error)]
pub enum DoctorError {
    #[error("encoding the report as JSON")]
    Json(#[source] serde_json::Error),
    #[error("writing the report to stdout")]
    Write(#[source] io::Error),
}

/// Prints the report; fails (exit status 1) when not even the tracepoint tier is available.
pub fn main(args: DoctorArgs) -> Result<ExitCode, super::CommandError> {
    let DoctorArgs { json, api } = args;
    let kernel = doctor::inspect();
    let tier = kernel.tier();
    let daemon_maps = daemon_maps(&api);
    let output = if json {
        let mut document = serde_json::to_value(Document::new(&kernel, &tier)).map_err(DoctorError::Json)?;
        document["daemon_maps"] = daemon_maps.clone().unwrap_or(Value::Null);
        let mut text = serde_json::to_string_pretty(&document).map_err(DoctorError::Json)?;
        text.push('\n');
        text
    } else {
        let mut rows = report::rows(&kernel, &tier);
        rows.extend(map_rows(&api, daemon_maps.as_ref()));
        report::table(&rows)
    };
    let mut stdout = io::stdout().lock();
    stdout
        .write_all(output.as_bytes())
        .and_then(|()| stdout.flush())
        .map_err(DoctorError::Write)?;
    match tier {
        Ok(_) => Ok(ExitCode::SUCCESS),
        Err(error) => Err(error.into()),
    }
}

/// The running daemon's kernel maps (`status` → `kernel.maps`), if one answers on the socket.
fn daemon_maps(api: &SocketArgs) -> Option<Value> {
    let status = socket::block_on(async {
        tokio::time::timeout(std::time::Duration::from_secs(2), api.client().status()).await
    });
    let mut status = status.ok()?.ok()?.ok()?;
    Some(status["kernel"]["maps"].take())
}

/// One row per map of the running daemon: its size and failed writes.
fn map_rows(api: &SocketArgs, maps: Option<&Value>) -> Vec<Row> {
    let Some(maps) = maps.and_then(Value::as_array) else {
        let detail = format!("no daemon answers on {}: failed map writes are shown while one runs", api.socket.display());
        return vec![Row::new("daemon", "absent", detail)];
    };
    maps.iter()
        .map(|map| {
            let failures = map["write_failures"].as_u64().unwrap_or(0);
            let status = if failures == 0 { "ok" } else { "full" };
            let detail = format!("{} entries, {failures} failed writes (running daemon)", map["entries"]);
            Row::new(format!("daemon-map:{}", map["map"].as_str().unwrap_or("?")), status, detail)
        })
        .collect()
}
