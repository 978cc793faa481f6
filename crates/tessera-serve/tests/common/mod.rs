//! Starting a server for a test: on a free loopback port, in its own thread and runtime.

use std::net::SocketAddr;
use std::time::Duration;
use tessera_serve::{ServeOptions, Server};

/// Serve `opts` until `shutdown` resolves; returns the address and the server thread.
pub fn spawn(
    opts: ServeOptions,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> (SocketAddr, std::thread::JoinHandle<()>) {
    let (tx, rx) = std::sync::mpsc::channel();
    let thread = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let bound = Server::load(opts).unwrap().bind().await.unwrap();
            tx.send(bound.addr()).unwrap();
            bound.serve(shutdown).await.unwrap();
        });
    });
    let addr = rx
        .recv_timeout(Duration::from_secs(600))
        .expect("server started");
    (addr, thread)
}

/// Serve `opts` for the rest of the test process.
pub fn start(opts: ServeOptions) -> SocketAddr {
    spawn(opts, std::future::pending()).0
}
