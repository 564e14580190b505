//! The HTTP endpoint of `graywatch run`: `/metrics` (Prometheus text format), `/healthz` (the
//! process answers) and `/readyz` (assigned and restored, and the main loop turned in the last
//! [`STALL_AFTER_MS`]). It runs on its own thread with a small tokio runtime, which also turns
//! SIGTERM and SIGINT into a shutdown request.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use prometheus_client::registry::Registry;

use super::metrics::Metrics;

/// A main loop silent for this long (ms) is stalled: `/readyz` answers 503.
pub const STALL_AFTER_MS: i64 = 30_000;

#[derive(Clone)]
struct Shared {
    metrics: Arc<Metrics>,
    registry: Arc<Registry>,
}

/// Starts the endpoint on `listen` and the signal handlers; `shutdown` is set on SIGTERM or
/// SIGINT. Returns the address bound (port 0 picks one).
///
/// # Errors
/// The address can't be bound (named).
pub fn start(
    listen: SocketAddr,
    metrics: Arc<Metrics>,
    shutdown: Arc<AtomicBool>,
) -> anyhow::Result<SocketAddr> {
    let listener = std::net::TcpListener::bind(listen)
        .map_err(|e| anyhow::anyhow!("[http] listen {listen}: {e}"))?;
    listener.set_nonblocking(true)?;
    let bound = listener.local_addr()?;
    let shared = Shared {
        registry: Arc::new(metrics.registry()),
        metrics,
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    std::thread::Builder::new()
        .name("graywatch-http".into())
        .spawn(move || {
            runtime.block_on(async move {
                tokio::spawn(signals(shutdown));
                let app = Router::new()
                    .route("/metrics", get(metrics_text))
                    .route("/healthz", get(|| async { "ok\n" }))
                    .route("/readyz", get(readyz))
                    .with_state(shared);
                match tokio::net::TcpListener::from_std(listener) {
                    Ok(l) => {
                        if let Err(e) = axum::serve(l, app).await {
                            tracing::error!(error = %e, "http endpoint stopped");
                        }
                    }
                    Err(e) => tracing::error!(error = %e, "http endpoint"),
                }
            });
        })?;
    Ok(bound)
}

async fn signals(shutdown: Arc<AtomicBool>) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!("cannot listen for SIGTERM/SIGINT");
        return;
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
        _ = int.recv() => tracing::info!("SIGINT: shutting down"),
    }
    shutdown.store(true, Ordering::SeqCst);
}

async fn metrics_text(State(s): State<Shared>) -> impl IntoResponse {
    let mut body = String::new();
    match prometheus_client::encoding::text::encode(&mut body, &s.registry) {
        Ok(()) => (
            StatusCode::OK,
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            body,
        ),
        Err(_) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            [(header::CONTENT_TYPE, "text/plain")],
            "metrics could not be encoded\n".into(),
        ),
    }
}

async fn readyz(State(s): State<Shared>) -> impl IntoResponse {
    let now = crate::kafka::now_ms();
    let last = s.metrics.last_turn_ms.load(Ordering::Relaxed);
    if !s.metrics.ready.load(Ordering::Relaxed) {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: restoring or waiting for partitions\n",
        )
    } else if now - last > STALL_AFTER_MS {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: the main loop is stalled\n",
        )
    } else {
        (StatusCode::OK, "ready\n")
    }
}
