//! What the commands that talk to the running daemon share: the `--socket` option and the
//! single-threaded runtime they run on.

use std::{future::Future, io, path::PathBuf};

use crate::api::{self, client::ApiClient};

#[derive(Debug, clap::Args)]
pub struct SocketArgs {
    /// The daemon's task API socket.
    #[arg(long, value_name = "PATH", default_value = api::DEFAULT_SOCKET)]
    pub socket: PathBuf,
}

impl SocketArgs {
    pub fn client(&self) -> ApiClient {
        ApiClient::new(&self.socket)
    }
}

/// Runs a client command to completion; one request at a time needs no more than one thread.
pub fn block_on<F: Future>(future: F) -> io::Result<F::Output> {
    Ok(tokio::runtime::Builder::new_current_thread().enable_all().build()?.block_on(future))
}
