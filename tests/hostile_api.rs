//! The task API under hostile clients, against the real daemon: a thousand connections at once,
//! a client sending its headers a byte a second, bodies past the limit, malformed and pipelined
//! HTTP, a findings stream nobody reads. The daemon keeps judging kernel events, its memory
//! stays bounded, and every refusal is counted. Needs root.

mod common;

use std::{
    io::{Read as _, Write as _},
    os::unix::{net::UnixStream, process::ExitStatusExt as _},
    path::Path,
    time::{Duration, Instant},
};

use common::{daemon::RunningDaemon, shared_read::SharedRead, Gated};
use monitor::daemon::control::TaskRequest;

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|line| line.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// `credwatch_api_refused_total{reason="connections"}` as the metrics endpoint serves it.
fn scraped_refusals(metrics: std::net::SocketAddr) -> u64 {
    let mut stream = std::net::TcpStream::connect(metrics).unwrap();
    write!(stream, "GET /metrics HTTP/1.0\r\nhost: x\r\n\r\n").unwrap();
    let mut text = String::new();
    stream.read_to_string(&mut text).unwrap();
    let line = text.lines().find(|line| line.starts_with("credwatch_api_refused_total{reason=\"connections\"}"));
    line.and_then(|line| line.split_whitespace().last()?.parse().ok()).unwrap_or(0)
}

async fn refused(daemon: &RunningDaemon, reason: &str) -> u64 {
    daemon.client.status().await.unwrap()["api_refused"][reason].as_u64().unwrap()
}

/// Sends `request` raw and returns what the server answered until it closed, or until it had sent
/// `responses` responses.
fn raw(socket: &Path, request: &[u8], responses: usize) -> String {
    let mut stream = UnixStream::connect(socket).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    stream.write_all(request).unwrap();
    let mut answer = Vec::new();
    let mut buffer = [0; 4096];
    while String::from_utf8_lossy(&answer).matches("HTTP/1.1 ").count() < responses || !complete(&answer) {
        match stream.read(&mut buffer) {
            Ok(0) | Err(_) => break,
            Ok(read) => answer.extend_from_slice(&buffer[..read]),
        }
    }
    String::from_utf8_lossy(&answer).into_owned()
}

/// Whether the last response's body is all there (by its content-length).
fn complete(answer: &[u8]) -> bool {
    let text = String::from_utf8_lossy(answer);
    let Some(last) = text.rfind("HTTP/1.1 ") else { return false };
    let response = &text[last..];
    let Some(head_end) = response.find("\r\n\r\n") else { return false };
    let length = response[..head_end]
        .lines()
        .find_map(|line| line.strip_prefix("content-length: "))
        .and_then(|length| length.trim().parse::<usize>().ok())
        .unwrap_or(0);
    response.len() >= head_end + 4 + length
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_connections_at_once_are_bounded_and_a_reuse_is_still_killed() {
    let mut daemon = RunningDaemon::start("");
    let (secret, _) = daemon.plant(".aws/credentials");
    daemon.wait_watched(&secret);
    let home = daemon.home.path().to_owned();
    let owner = Gated::spawn("exec sleep 60", &home, &[]);
    let mut request = TaskRequest::new("owner", owner.pid);
    request.secrets = vec![secret.display().to_string()];
    daemon.client.start_task(&request).await.unwrap();
    let read = SharedRead::new(&home, "reuser");
    let reuser = Gated::spawn(&format!("exec {}", read.command(".aws/credentials")), &home, &[]);
    let reuser_pid = reuser.pid;
    daemon.client.start_task(&TaskRequest::new("reuser", reuser.pid)).await.unwrap();
    let before = rss_kib(daemon.pid());

    // A thousand clients connect and send nothing.
    let idle: Vec<UnixStream> = (0..1000).map(|_| UnixStream::connect(&daemon.socket).unwrap()).collect();
    let (status, _) = reuser.release();
    assert_eq!(status.signal(), Some(9), "killed in the kernel while the API is flooded: {status}");
    assert_eq!(read.received().len(), 0, "bytes of the secret reached the reuser");
    // Every connection past the limit is refused as soon as it is accepted: watched on /metrics,
    // which the flood does not reach.
    let metrics = daemon.metrics_address();
    let deadline = Instant::now() + Duration::from_secs(20);
    while scraped_refusals(metrics) < 1000 - 256 {
        assert!(Instant::now() < deadline, "refusals on /metrics: {}", scraped_refusals(metrics));
        std::thread::sleep(Duration::from_millis(50));
    }
    let peak = rss_kib(daemon.pid());
    drop(idle);

    let finding = daemon.finding(|finding| finding["rule"] == "cross_task_reuse" && finding["process"]["pid"] == reuser_pid).await;
    assert_eq!(finding["actions"][0]["result"], "killed_in_kernel", "{finding:#}");
    let status = daemon.client.status().await.unwrap();
    let p99_ms = status["latency"]["p99_ns"].as_f64().unwrap() / 1e6;
    assert!(p99_ms < 50.0, "kernel events kept being judged: p99 {p99_ms} ms; {status:#}");
    assert!(refused(&daemon, "connections").await >= 1000 - 256, "{status:#}");
    assert!(peak.saturating_sub(before) < 64 << 10, "memory stays bounded: {before} KiB, then {peak} KiB");
    eprintln!("hostile: 1000 connections, {} refused, RSS {before} KiB -> {peak} KiB, p99 {p99_ms} ms", refused(&daemon, "connections").await);
    drop(owner);
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_client_is_dropped_at_the_header_timeout() {
    let daemon = RunningDaemon::start("");
    let mut stream = UnixStream::connect(&daemon.socket).unwrap();
    let started = Instant::now();
    let mut dropped = false;
    for byte in b"GET /v1/status HTTP/1.1\r\nhost: x\r\nx-slow: aaaaaaaaaaaaaaaaaaaaaaaaa" {
        if stream.write_all(&[*byte]).is_err() {
            dropped = true;
            break;
        }
        std::thread::sleep(Duration::from_secs(1));
    }
    assert!(dropped, "still connected after {:?}", started.elapsed());
    assert!(started.elapsed() < Duration::from_secs(15));
    assert!(refused(&daemon, "header_timeout").await >= 1);
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_malformed_and_pipelined_requests_are_answered_and_counted() {
    let daemon = RunningDaemon::start("");
    let socket = daemon.socket.clone();
    let big = format!("POST /v1/tasks HTTP/1.1\r\nhost: x\r\ncontent-length: {}\r\n\r\n", 2 << 20);
    let answer = tokio::task::spawn_blocking({
        let socket = socket.clone();
        move || raw(&socket, big.as_bytes(), 1)
    })
    .await
    .unwrap();
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");

    let answer = tokio::task::spawn_blocking({
        let socket = socket.clone();
        move || raw(&socket, b"NOT HTTP AT ALL\r\n\r\n", 1)
    })
    .await
    .unwrap();
    assert!(answer.starts_with("HTTP/1.1 400") || answer.is_empty(), "{answer}");

    let pipelined = b"GET /v1/status HTTP/1.1\r\nhost: x\r\n\r\nGET /v1/tasks HTTP/1.1\r\nhost: x\r\n\r\n";
    let answer = tokio::task::spawn_blocking(move || raw(&socket, pipelined, 2)).await.unwrap();
    assert_eq!(answer.matches("HTTP/1.1 200").count(), 2, "{answer}");

    assert!(refused(&daemon, "too_large").await >= 1);
    assert!(refused(&daemon, "bad_http").await >= 1);
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_findings_stream_nobody_reads_holds_nothing_up() {
    let mut daemon = RunningDaemon::start("");
    let value = daemon.plant_value();
    // Follow the findings and never read them.
    let mut stream = UnixStream::connect(&daemon.socket).unwrap();
    stream.write_all(b"GET /v1/findings?follow=1 HTTP/1.1\r\nhost: x\r\n\r\n").unwrap();
    let before = rss_kib(daemon.pid());
    let burst = std::process::Command::new("/bin/sh")
        .args(["-c", "for i in $(seq 2000); do /bin/true; done"])
        .env("CWTEST_UNREAD_TOKEN", &value)
        .status()
        .unwrap();
    assert!(burst.success());
    let started = Instant::now();
    let status = daemon.client.status().await.unwrap();
    assert!(started.elapsed() < Duration::from_secs(2), "the daemon still answers at once");
    let findings = status["daemon"]["findings"].as_u64().unwrap();
    assert!(findings >= 2000, "{status:#}");
    let after = rss_kib(daemon.pid());
    assert!(after.saturating_sub(before) < 64 << 10, "memory stays bounded: {before} KiB, then {after} KiB");
    drop(stream);
    daemon.stop().await;
}
