//! The HTTPS request loop, in Python over Debian's OpenSSL (the library credwatch's TLS uprobes
//! sit on): the TLS tests' local server, and a client that speaks the
//! `bench-load` protocol (`ready`, a line on stdin, `ns_per_op WALL cpu_ns_per_op CPU`) and sends
//! keep-alive GET requests carrying an `Authorization` header with a made-up value (no known
//! secret: the daemon scans every request and finds nothing).

use std::{
    ffi::OsString,
    io::{BufRead as _, BufReader},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
};

use super::error::BenchError;

const PYTHON: &str = "/usr/bin/python3";

/// The same server as the TLS tests'.
const SERVER: &str = include_str!("../../../tests/data/https_server.py");

/// argv: port, requests, [a file to open first, making the process a holder].
const CLIENT: &str = r#"
import http.client, ssl, sys, time
port, n = int(sys.argv[1]), int(sys.argv[2])
print("ready", flush=True)
sys.stdin.readline()
if len(sys.argv) > 3:
    open(sys.argv[3]).read()
connection = http.client.HTTPSConnection("127.0.0.1", port, context=ssl._create_unverified_context())
headers = {"Authorization": "Bearer bench-made-up-value-0123456789"}
def request():
    connection.request("GET", "/", headers=headers)
    connection.getresponse().read()
for _ in range(max(n // 10, 1)):
    request()
wall, cpu = time.perf_counter_ns(), time.thread_time_ns()
for _ in range(n):
    request()
wall, cpu = time.perf_counter_ns() - wall, time.thread_time_ns() - cpu
print(f"ns_per_op {wall / n} cpu_ns_per_op {cpu / n}", flush=True)
"#;

/// The server, running until dropped.
pub struct HttpsServer {
    child: Child,
    port: u16,
}

impl HttpsServer {
    /// Starts the server on a loopback port, with a self-signed certificate it makes in `dir`.
    pub fn start(dir: &Path) -> Result<Self, BenchError> {
        let mut child = Command::new(PYTHON)
            .arg("-c")
            .arg(SERVER)
            .arg(dir)
            .stdout(Stdio::piped())
            .spawn()
            .map_err(BenchError::io(format!("starting the HTTPS server ({PYTHON})")))?;
        let mut line = String::new();
        let read = BufReader::new(child.stdout.take().expect("stdout was piped")).read_line(&mut line);
        let port = read.ok().and_then(|_| line.trim().parse().ok());
        // Owned before the port is known, so that an error below still kills the child.
        let mut server = Self { child, port: 0 };
        match port {
            Some(port) => {
                server.port = port;
                Ok(server)
            }
            None => Err(BenchError::Helper { what: format!("the HTTPS server said {line:?}"), log: String::new() }),
        }
    }

    /// The client's program and arguments: `requests` requests, opening `hold` first.
    pub fn client(&self, requests: u64, hold: Option<PathBuf>) -> (PathBuf, Vec<OsString>) {
        let mut args: Vec<OsString> = vec!["-c".into(), CLIENT.into(), self.port.to_string().into(), requests.to_string().into()];
        args.extend(hold.map(OsString::from));
        (PathBuf::from(PYTHON), args)
    }
}

impl Drop for HttpsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
