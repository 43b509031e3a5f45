//! The real clients the egress tests run as processes: curl, and the scripts of
//! tests/data/egress/ on Node's `https`, Python's urllib (with `websockets` and `grpcio`) and Go's
//! net/http. A script reads its request from a JSON file, so that no token is ever on a command
//! line or in an environment; each trusts a CA and finds a proxy the way its runtime does by
//! default, from the environment that the test gives it.

use std::{
    fmt,
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    sync::OnceLock,
    thread::JoinHandle,
    time::{Duration, Instant},
};

/// What a script does with its request (`mode` in the JSON file).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// One request; prints the body.
    Request,
    /// A server-sent event stream; prints each event as it arrives, with its delay.
    Sse,
    /// A WebSocket: sends the body as one text message and prints the echo (Python only).
    Ws,
    /// A unary gRPC call to the URL's path with the body as the message (Python only).
    Grpc,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Self::Request => "request",
            Self::Sse => "sse",
            Self::Ws => "ws",
            Self::Grpc => "grpc",
        }
    }
}

/// A request for a client. No `Debug`: its headers hold the tokens under test.
#[derive(Clone)]
pub struct ClientRequest {
    pub mode: Mode,
    pub url: String,
    pub method: String,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl ClientRequest {
    pub fn new(mode: Mode, url: impl Into<String>) -> Self {
        Self { mode, url: url.into(), method: "GET".to_owned(), headers: Vec::new(), body: String::new() }
    }

    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }

    pub fn post(mut self, body: &str) -> Self {
        body.clone_into(&mut self.body);
        "POST".clone_into(&mut self.method);
        self
    }

    /// Writes the request where a script reads it: `dir/request.json`.
    fn write_json(&self, dir: &Path) -> PathBuf {
        let headers: serde_json::Map<String, serde_json::Value> =
            self.headers.iter().map(|(name, value)| (name.clone(), value.clone().into())).collect();
        let json = serde_json::json!({
            "mode": self.mode.name(),
            "url": self.url,
            "method": self.method,
            "headers": headers,
            "body": self.body,
        });
        let path = dir.join("request.json");
        std::fs::write(&path, json.to_string()).unwrap();
        path
    }

    /// Writes curl's `-H @file` and `--data-binary @file` inputs.
    fn write_curl_files(&self, dir: &Path) -> (PathBuf, PathBuf) {
        let headers: String = self.headers.iter().map(|(name, value)| format!("{name}: {value}\n")).collect();
        let (headers_path, body_path) = (dir.join("curl-headers"), dir.join("curl-body"));
        std::fs::write(&headers_path, headers).unwrap();
        std::fs::write(&body_path, &self.body).unwrap();
        (headers_path, body_path)
    }
}

/// Which HTTP curl asks for: `--http2` still falls back to HTTP/1.1 where ALPN says so.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Http {
    V1_1,
    V2,
}

/// A client, and the proxy it finds in its environment by default (checked by hand with a
/// CONNECT proxy: which variables make it send CONNECT, and for which hosts).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Client {
    /// curl (OpenSSL); request mode only. HTTPS_PROXY or https_proxy, loopback hosts too.
    Curl(Http),
    /// tests/data/egress/client.js: Node's `https` module, HTTP/1.1 only; request and sse. No
    /// proxy variable at all.
    Node,
    /// tests/data/egress/client.py on /usr/bin/python3: every mode. urllib (request, sse):
    /// HTTPS_PROXY or https_proxy, loopback hosts too; websockets 10.4 (ws): none; grpcio (grpc):
    /// the lowercase grpc_proxy, https_proxy or http_proxy only, loopback hosts too.
    Python,
    /// tests/data/egress/client.go, built by `go_client`: HTTP/2 where offered; request and sse.
    /// HTTPS_PROXY or https_proxy, but never for `localhost` or a loopback address.
    Go,
}

impl Client {
    /// The process that sends `request` (its input files written to `dir`), trusting `ca_pem`
    /// only through the environment, with no proxy variable inherited from the test's own.
    pub fn command(self, request: &ClientRequest, dir: &Path, ca_pem: &Path) -> Command {
        let mut command = match self {
            Self::Curl(http) => curl(http, request, dir),
            Self::Node => script_command("node", "client.js", request, dir),
            Self::Python => script_command("/usr/bin/python3", "client.py", request, dir),
            Self::Go => {
                let mut command = Command::new(go_client());
                command.arg(request.write_json(dir));
                command
            }
        };
        for variable in PROXY_VARIABLES {
            command.env_remove(variable);
        }
        command.envs(ca_env(ca_pem));
        command
    }

    /// Runs `request` with `env` added (e.g. `HTTPS_PROXY`) and waits for its reply.
    pub fn run(
        self,
        request: &ClientRequest,
        dir: &Path,
        ca_pem: &Path,
        env: &[(&str, &str)],
    ) -> Result<Reply, Failed> {
        let mut command = self.command(request, dir, ca_pem);
        command.envs(env.iter().copied());
        self.run_command(command)
    }

    /// Runs a command from `command` (which a test may have changed, e.g. to start it in a task)
    /// for 30 s at most, and reads its reply.
    pub fn run_command(self, mut command: Command) -> Result<Reply, Failed> {
        let child = command.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
        let (status, stdout, stderr) = wait_bounded(child, crate::common::patience(30));
        match status {
            Some(status) if status.success() => match self {
                Self::Curl(_) => Reply::parse_curl(&stdout),
                _ => Reply::parse(&stdout),
            }
            .ok_or_else(|| Failed {
                status: Some(status),
                stderr: format!("unreadable output ({} bytes): {stderr}", stdout.len()),
            }),
            status => Err(Failed { status, stderr }),
        }
    }
}

/// The variables through which a client could find a proxy; each test sets its own.
const PROXY_VARIABLES: [&str; 9] = [
    "https_proxy",
    "HTTPS_PROXY",
    "http_proxy",
    "HTTP_PROXY",
    "all_proxy",
    "ALL_PROXY",
    "no_proxy",
    "NO_PROXY",
    "grpc_proxy",
];

/// The variables through which each client trusts the CA in `ca_pem`: OpenSSL (curl, Python) and
/// Go read SSL_CERT_FILE, Node NODE_EXTRA_CA_CERTS, curl CURL_CA_BUNDLE, Python's requests
/// REQUESTS_CA_BUNDLE; the gRPC script hands SSL_CERT_FILE's certificates to grpcio itself.
pub fn ca_env(ca_pem: &Path) -> [(&'static str, &Path); 4] {
    ["SSL_CERT_FILE", "NODE_EXTRA_CA_CERTS", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE"].map(|name| (name, ca_pem))
}

fn data_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/data/egress")
}

fn script_command(interpreter: &str, script: &str, request: &ClientRequest, dir: &Path) -> Command {
    let mut command = Command::new(interpreter);
    command.arg(data_dir().join(script)).arg(request.write_json(dir));
    command
}

/// curl with the request's headers and body from files; `--include` puts the status line in its
/// output, `--suppress-connect-headers` keeps a proxy's CONNECT reply out of it.
fn curl(http: Http, request: &ClientRequest, dir: &Path) -> Command {
    assert_eq!(request.mode, Mode::Request, "curl sends plain requests only");
    let (headers, body) = request.write_curl_files(dir);
    let mut command = Command::new("curl");
    command
        .args(["--silent", "--show-error", "--include", "--suppress-connect-headers"])
        .arg(match http {
            Http::V1_1 => "--http1.1",
            Http::V2 => "--http2",
        })
        .args(["--request", &request.method])
        .arg("--header")
        .arg(at(&headers));
    if !request.body.is_empty() {
        command.arg("--data-binary").arg(at(&body));
    }
    command.arg(&request.url);
    command
}

/// curl's `@file` argument.
fn at(path: &Path) -> std::ffi::OsString {
    let mut argument = std::ffi::OsString::from("@");
    argument.push(path);
    argument
}

/// The Go client, built once per test binary into the target directory (its build cache and
/// GOPATH there too, so that it needs neither HOME nor the network: it uses the standard library
/// only). Built under a name of its own and renamed, so that test binaries can build it at once.
pub fn go_client() -> &'static Path {
    static BINARY: OnceLock<PathBuf> = OnceLock::new();
    BINARY.get_or_init(|| {
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("egress-go");
        let (binary, partial) = (dir.join("client"), dir.join(format!("client.{}", std::process::id())));
        let output = Command::new("go")
            .args(["build", "-o"])
            .arg(&partial)
            .arg(data_dir().join("client.go"))
            .env("GOCACHE", dir.join("cache"))
            .env("GOPATH", dir.join("gopath"))
            .env("GOPROXY", "off")
            // Pure Go: no C toolchain, and the binary runs wherever the test does.
            .env("CGO_ENABLED", "0")
            .output()
            .expect("running `go build` (golang-go; `cargo xtask setup` installs it)");
        assert!(output.status.success(), "go build: {}", String::from_utf8_lossy(&output.stderr));
        std::fs::rename(&partial, &binary).unwrap();
        binary
    })
}

/// Waits for `child` until `timeout`, then kills it. Its exit status (`None` if it was killed
/// for the time) and everything it printed.
fn wait_bounded(mut child: Child, timeout: Duration) -> (Option<ExitStatus>, String, String) {
    let stdout = drain(child.stdout.take().unwrap());
    let stderr = drain(child.stderr.take().unwrap());
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            child.wait().unwrap();
            break None;
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    (status, stdout.join().unwrap(), stderr.join().unwrap())
}

/// Reads a pipe to its end in a thread, so that a chatty child never blocks on a full pipe.
fn drain(mut pipe: impl std::io::Read + Send + 'static) -> JoinHandle<String> {
    std::thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = pipe.read_to_end(&mut bytes);
        String::from_utf8_lossy(&bytes).into_owned()
    })
}

/// What a client printed: a line `STATUS PROTOCOL` (the HTTP status, or the gRPC status's name
/// such as `OK`; `HTTP/1.1` or `HTTP/2`), then the body. No `Debug`: a body may echo a token.
pub struct Reply {
    pub status: String,
    pub protocol: String,
    pub body: String,
}

impl Reply {
    fn parse(stdout: &str) -> Option<Self> {
        let (head, body) = stdout.split_once('\n')?;
        let (status, protocol) = head.split_once(' ')?;
        Some(Self { status: status.to_owned(), protocol: protocol.to_owned(), body: body.to_owned() })
    }

    /// curl's `--include` output: header blocks (interim 1xx ones first), a blank line, the body.
    fn parse_curl(stdout: &str) -> Option<Self> {
        let mut rest = stdout;
        loop {
            let (head, body) = rest.split_once("\r\n\r\n")?;
            let mut status_line = head.lines().next()?.split(' ');
            let (protocol, status) = (status_line.next()?, status_line.next()?);
            if !status.starts_with('1') || status == "101" {
                return Some(Self { status: status.to_owned(), protocol: protocol.to_owned(), body: body.to_owned() });
            }
            rest = body;
        }
    }

    /// The events of an `sse` reply, in the order they arrived.
    pub fn events(&self) -> Vec<SseEvent> {
        self.body
            .lines()
            .filter_map(|line| {
                let mut fields = line.strip_prefix("event ")?.split(' ');
                let index = fields.next()?.parse().ok()?;
                let delay_micros = fields.next()?.parse().ok()?;
                Some(SseEvent { index, delay_micros })
            })
            .collect()
    }
}

/// One server-sent event as a client saw it: `event INDEX DELAY` in its output.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SseEvent {
    pub index: u32,
    /// Its arrival at the client less its send by the upstream, both unix time in µs.
    pub delay_micros: i64,
}

/// A client that did not finish with a readable reply: its exit status (`None`: killed after
/// the time limit) and what it printed on stderr.
pub struct Failed {
    pub status: Option<ExitStatus>,
    pub stderr: String,
}

impl fmt::Debug for Failed {
    /// Readable in a test's `unwrap`: the status and stderr as they were, not escaped.
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.status {
            Some(status) => write!(formatter, "the client failed ({status}): {}", self.stderr),
            None => write!(formatter, "the client was killed after the time limit: {}", self.stderr),
        }
    }
}
