//! `tessera serve`: an OpenAI-compatible HTTP server over tessera's inference backend.
//!
//! ```text
//! client ──HTTP──▶ axum router (api.rs: auth, parsing, OpenAI shapes, SSE)
//!                     │ GenRequest (bounded queue: 429 when full)
//!                     ▼
//!                  engine thread (engine.rs): slots = KV caches; each step admits waiting
//!                  requests (prefill, prefix reuse), steps every active sequence in one batched
//!                  forward pass, samples, streams tokens back over a channel per request
//! ```
//!
//! The HTTP stack is tokio + axum (hyper); the model runs on its own thread so that request
//! handling never waits on a decode step.

#![forbid(unsafe_code)]

pub mod api;
pub mod engine;
pub mod metrics;

use anyhow::{Context, Result};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// What `tessera serve` is asked to run.
#[derive(Clone, Debug)]
pub struct ServeOptions {
    /// A known model name, a .gguf file or a model directory.
    pub model: String,
    pub host: String,
    pub port: u16,
    /// Required bearer token for `/v1/*` and `/metrics`.
    pub api_key: Option<String>,
    /// Sequences decoded together (slots).
    pub parallel: usize,
    /// Context per slot (tokens; at most the model's).
    pub ctx: usize,
    /// Choices that may wait for a slot before requests are refused with 429.
    pub queue: usize,
    /// An encoder for `/v1/embeddings`.
    pub embedding_model: Option<String>,
    /// A LoRA adapter (PEFT's layout, e.g. from `tessera finetune chat`) merged into the model.
    pub adapter: Option<PathBuf>,
    /// Largest request body (bytes).
    pub max_body: usize,
    /// How long in-flight requests may run after a shutdown signal.
    pub drain: Duration,
    /// How long a client may take to send a request's headers (and an idle keep-alive
    /// connection may wait), and separately its body: slow clients are cut off.
    pub header_timeout: Duration,
    pub body_timeout: Duration,
}

impl Default for ServeOptions {
    fn default() -> Self {
        ServeOptions {
            model: "smollm2-135m-instruct".into(),
            host: "127.0.0.1".into(),
            port: 8080,
            api_key: None,
            parallel: 4,
            ctx: 2048,
            queue: 64,
            embedding_model: None,
            adapter: None,
            max_body: 1 << 20,
            drain: Duration::from_secs(10),
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(30),
        }
    }
}

/// A loaded server, not yet listening.
pub struct Server {
    state: Arc<api::AppState>,
    opts: ServeOptions,
}

impl Server {
    /// Load the model(s) and start the engine.
    pub fn load(opts: ServeOptions) -> Result<Self> {
        anyhow::ensure!(opts.parallel >= 1, "--parallel must be at least 1");
        anyhow::ensure!(opts.ctx >= 2, "--ctx must be at least 2");
        let path = tessera::hub::resolve(&opts.model)
            .with_context(|| format!("model '{}'", opts.model))?;
        let (mut model, tok) =
            tessera::generate::load_with_adapter(&path, &opts.model, opts.adapter.as_deref())
                .with_context(|| match &opts.adapter {
                    Some(a) => format!("loading {} with adapter {}", path.display(), a.display()),
                    None => format!("loading {}", path.display()),
                })?;
        model.limit_context(opts.ctx);
        let ctx = model.cfg.max_position_embeddings;
        let tok = Arc::new(tok);
        let metrics = Arc::new(metrics::Metrics::default());
        let describe = match &opts.adapter {
            Some(a) => format!("{} + LoRA adapter {}", model.describe(), a.display()),
            None => model.describe(),
        };
        let engine = engine::start(
            model,
            tok.clone(),
            opts.parallel,
            ctx,
            opts.queue,
            metrics.clone(),
        )?;
        let embedder = match &opts.embedding_model {
            Some(m) => {
                let dir =
                    tessera::hub::resolve(m).with_context(|| format!("embedding model '{m}'"))?;
                let e = tessera::tasks::embed::Embedder::load(&dir, &tessera::Device::Cpu)
                    .with_context(|| format!("loading {}", dir.display()))?;
                Some((m.clone(), Arc::new(std::sync::Mutex::new(e))))
            }
            None => None,
        };
        let state = Arc::new(api::AppState {
            model_name: opts.model.clone(),
            model_path: PathBuf::from(&path),
            describe,
            ctx,
            tok,
            engine,
            metrics,
            api_key: opts.api_key.clone(),
            embedder,
            created: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0),
            parallel: opts.parallel,
            max_body: opts.max_body,
        });
        Ok(Server { state, opts })
    }

    /// Bind the address (port 0: any free port).
    pub async fn bind(self) -> Result<Bound> {
        let addr = format!("{}:{}", self.opts.host, self.opts.port);
        let listener = tokio::net::TcpListener::bind(&addr)
            .await
            .with_context(|| format!("cannot listen on {addr}"))?;
        let local = listener.local_addr()?;
        Ok(Bound {
            server: self,
            listener,
            local,
        })
    }
}

/// A server bound to its address.
pub struct Bound {
    server: Server,
    listener: tokio::net::TcpListener,
    local: SocketAddr,
}

impl Bound {
    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.local
    }

    /// Serve until `shutdown` resolves, then let in-flight requests finish for at most the
    /// drain time.
    pub async fn serve(
        self,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> Result<()> {
        use hyper_util::rt::{TokioIo, TokioTimer};
        let opts = &self.server.opts;
        let app = api::router(self.server.state.clone(), opts.max_body).layer(
            tower_http::timeout::RequestBodyTimeoutLayer::new(opts.body_timeout),
        );
        let mut http = hyper::server::conn::http1::Builder::new();
        http.timer(TokioTimer::new())
            .header_read_timeout(opts.header_timeout)
            .keep_alive(true);
        let graceful = hyper_util::server::graceful::GracefulShutdown::new();
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                accepted = self.listener.accept() => {
                    let stream = match accepted {
                        Ok((s, _)) => s,
                        Err(_) => {
                            // Out of file descriptors or similar: back off, keep serving.
                            tokio::time::sleep(Duration::from_millis(20)).await;
                            continue;
                        }
                    };
                    let _ = stream.set_nodelay(true);
                    let svc = hyper_util::service::TowerToHyperService::new(app.clone());
                    let conn = graceful.watch(http.serve_connection(TokioIo::new(stream), svc));
                    tokio::spawn(async move {
                        let _ = conn.await;
                    });
                }
                _ = &mut shutdown => break,
            }
        }
        // Stop accepting; let the open requests finish within the drain time.
        drop(self.listener);
        let drain = self.server.opts.drain;
        if tokio::time::timeout(drain, graceful.shutdown())
            .await
            .is_err()
        {
            eprintln!(
                "tessera serve: drain time ({drain:?}) over; closing the remaining connections"
            );
        }
        Ok(())
    }
}

/// Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}

/// `tessera serve`: load, bind, print the URL, serve until Ctrl-C / SIGTERM.
pub fn run(opts: ServeOptions) -> Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let server = Server::load(opts)?;
    rt.block_on(async move {
        let bound = server.bind().await?;
        eprintln!(
            "tessera serve: {} ({}), {} slots × {} tokens",
            bound.server.state.model_name,
            bound.server.state.describe,
            bound.server.state.parallel,
            bound.server.state.ctx
        );
        println!("http://{}/", bound.addr());
        bound.serve(shutdown_signal()).await?;
        eprintln!("tessera serve: stopped");
        Ok(())
    })
}
