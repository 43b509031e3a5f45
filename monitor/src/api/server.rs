//! The socket and its accept loop: one HTTP/1 connection per client, each admitted or refused by
//! its peer credentials before any request is read.

use std::{
    convert::Infallible,
    io,
    os::unix::fs::{DirBuilderExt as _, FileTypeExt as _, PermissionsExt as _},
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use hyper::{server::conn::http1, service::service_fn};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::{
    net::{UnixListener, UnixStream},
    sync::{mpsc, watch},
    task::JoinHandle,
};
use tracing::{debug, info, warn};

use super::{
    error::{ApiError, Rejection},
    peer::{Allowlist, Peer},
    routes::{self, State},
    ApiConfig,
};
use crate::daemon::{control::ControlMessage, feed::FindingsFeed};

/// A client that has not sent its request headers by then is dropped.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// Pause after a failed `accept` (e.g. out of file descriptors) before trying again.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// The running server. Dropping it (or [`ApiServer::shutdown`]) stops serving, ends open
/// connections and findings streams, and removes the socket file.
pub struct ApiServer {
    socket: PathBuf,
    stop: Option<watch::Sender<()>>,
    accept: Option<JoinHandle<()>>,
}

impl ApiServer {
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// Stops serving and waits for the accept loop to end.
    pub async fn shutdown(mut self) {
        self.stop.take();
        if let Some(accept) = self.accept.take() {
            // The loop only ends; a panic in it has already been reported by tokio.
            let _ = accept.await;
        }
    }
}

impl Drop for ApiServer {
    fn drop(&mut self) {
        self.stop.take();
        if let Err(error) = std::fs::remove_file(&self.socket) {
            if error.kind() != io::ErrorKind::NotFound {
                warn!(socket = %self.socket.display(), %error, "removing the task API socket");
            }
        }
    }
}

/// Binds the socket (mode 0600) and serves the task API until the returned handle is dropped.
pub async fn serve(
    config: &ApiConfig,
    control: mpsc::Sender<ControlMessage>,
    feed: FindingsFeed,
) -> Result<ApiServer, ApiError> {
    let ApiConfig { socket, allow_uids, allow_gids } = config;
    let listener = bind(socket)?;
    let (stop, stopped) = watch::channel(());
    let state = Arc::new(State { control, feed, stop: stopped.clone() });
    let allowlist = Arc::new(Allowlist { uids: allow_uids.clone(), gids: allow_gids.clone() });
    let accept = tokio::spawn(accept_loop(listener, state, allowlist, stopped));
    info!(socket = %socket.display(), "task API listening");
    Ok(ApiServer { socket: socket.clone(), stop: Some(stop), accept: Some(accept) })
}

fn bind(socket: &Path) -> Result<UnixListener, ApiError> {
    if let Some(parent) = socket.parent().filter(|parent| !parent.as_os_str().is_empty() && !parent.exists()) {
        let create_error = |source| ApiError::CreateDir { path: parent.to_owned(), source };
        std::fs::DirBuilder::new().recursive(true).mode(0o755).create(parent).map_err(create_error)?;
        // The mode given to mkdir is reduced by the umask.
        std::fs::set_permissions(parent, std::fs::Permissions::from_mode(0o755)).map_err(create_error)?;
    }
    remove_stale(socket)?;
    let listener = UnixListener::bind(socket).map_err(|source| ApiError::Bind { path: socket.to_owned(), source })?;
    std::fs::set_permissions(socket, std::fs::Permissions::from_mode(0o600))
        .map_err(|source| ApiError::Permissions { path: socket.to_owned(), source })?;
    Ok(listener)
}

/// A socket file left by a daemon that died is removed; one with a live listener is not.
fn remove_stale(socket: &Path) -> Result<(), ApiError> {
    let metadata = match std::fs::symlink_metadata(socket) {
        Ok(metadata) => metadata,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(source) => return Err(ApiError::Probe { path: socket.to_owned(), source }),
    };
    if !metadata.file_type().is_socket() {
        return Err(ApiError::NotASocket { path: socket.to_owned() });
    }
    match std::os::unix::net::UnixStream::connect(socket) {
        Ok(_) => Err(ApiError::InUse { path: socket.to_owned() }),
        Err(error) if error.kind() == io::ErrorKind::ConnectionRefused => {
            std::fs::remove_file(socket).map_err(|source| ApiError::RemoveStale { path: socket.to_owned(), source })
        }
        Err(source) => Err(ApiError::Probe { path: socket.to_owned(), source }),
    }
}

async fn accept_loop(
    listener: UnixListener,
    state: Arc<State>,
    allowlist: Arc<Allowlist>,
    mut stop: watch::Receiver<()>,
) {
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = stop.changed() => return,
        };
        match accepted {
            Ok((stream, _)) => {
                tokio::spawn(connection(stream, Arc::clone(&state), Arc::clone(&allowlist), stop.clone()));
            }
            Err(error) => {
                warn!(%error, "accepting a task API connection");
                tokio::time::sleep(ACCEPT_BACKOFF).await;
            }
        }
    }
}

async fn connection(stream: UnixStream, state: Arc<State>, allowlist: Arc<Allowlist>, mut stop: watch::Receiver<()>) {
    let caller = match Peer::of(&stream, &allowlist) {
        Ok(peer) => {
            let caller = allowlist.admit(&peer);
            if caller.is_err() {
                warn!(uid = peer.uid, gid = peer.gid, pid = peer.pid, "task API connection refused: not allowlisted");
            }
            caller
        }
        Err(error) => Err(Rejection::new(
            hyper::StatusCode::FORBIDDEN,
            format!("the peer's credentials could not be read: {error}"),
        )),
    };
    let service = service_fn(move |request: hyper::Request<hyper::body::Incoming>| {
        let state = Arc::clone(&state);
        let caller = caller.clone();
        async move {
            let (method, path) = (request.method().clone(), request.uri().path().to_owned());
            let peer = caller.as_ref().ok().copied();
            let response = routes::handle(request, caller, &state).await;
            debug!(%method, path, status = response.status().as_u16(), pid = peer.map(|c| c.pid), uid = peer.map(|c| c.uid), "task API request");
            Ok::<_, Infallible>(response)
        }
    });
    let served = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .serve_connection(TokioIo::new(stream), service);
    tokio::select! {
        result = served => {
            if let Err(error) = result {
                debug!(%error, "task API connection ended with an error");
            }
        }
        _ = stop.changed() => {}
    }
}
