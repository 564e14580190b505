//! The HTTP endpoint of `graywatch run` (and `replay --serve`): `/metrics` (Prometheus text
//! format), `/map` (the live landscape map, [`MAP_PAGE`]; its state as JSON on `/map/state`,
//! and each new window's on `/map/events` as server-sent events), `/healthz` (the
//! process answers), `/readyz` (assigned and restored, and the main loop turned in the last
//! [`STALL_AFTER_MS`]), and with an admin token the admin endpoint `POST /admin/approve`
//! (body: a proposed command's id; `Authorization: Bearer TOKEN`; loopback clients only),
//! which hands the approval to the main loop and answers with its outcome. It runs on its own
//! thread with a small tokio runtime, which also turns SIGTERM and SIGINT into a shutdown
//! request.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use prometheus_client::registry::Registry;

use super::metrics::Metrics;

/// A main loop silent for this long (ms) is stalled: `/readyz` answers 503.
pub const STALL_AFTER_MS: i64 = 30_000;

/// How long an approval waits for the main loop's answer.
const APPROVAL_WAIT: Duration = Duration::from_secs(10);

/// An operator's approval of a proposed command, for the main loop; it answers on `reply`:
/// the outcome (`Ok`: what was done) or why not, with the HTTP status to answer.
#[derive(Debug)]
pub struct Approval {
    /// The command's id.
    pub id: String,
    /// The revision the operator approves (body `ID@REVISION`); `None`: whichever is
    /// proposed.
    pub revision: Option<u32>,
    /// Where the main loop answers.
    /// Where the main loop answers: the HTTP status and text, `Ok` when approved (200) or
    /// forwarded to the judge holding it (202, `[scale-out]`).
    pub reply: tokio::sync::oneshot::Sender<Result<(u16, String), (u16, String)>>,
}

/// The admin endpoint's part: the token, and the way to the main loop.
#[derive(Clone)]
pub struct Admin {
    /// The bearer token.
    pub token: Arc<str>,
    /// Approvals to the main loop.
    pub approvals: std::sync::mpsc::Sender<Approval>,
}

#[derive(Clone)]
struct Shared {
    metrics: Arc<Metrics>,
    registry: Arc<Registry>,
    admin: Option<Admin>,
}

/// Starts the endpoint on `listen` and the signal handlers; `shutdown` is set on SIGTERM or
/// SIGINT; with `admin`, the admin endpoint too. Returns the address bound (port 0 picks one).
///
/// # Errors
/// The address can't be bound (named).
pub fn start(
    listen: SocketAddr,
    metrics: Arc<Metrics>,
    shutdown: Arc<AtomicBool>,
    admin: Option<Admin>,
) -> anyhow::Result<SocketAddr> {
    let listener = std::net::TcpListener::bind(listen)
        .map_err(|e| anyhow::anyhow!("[http] listen {listen}: {e}"))?;
    listener.set_nonblocking(true)?;
    let bound = listener.local_addr()?;
    let shared = Shared {
        registry: Arc::new(metrics.registry()),
        metrics,
        admin,
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
                    .route("/map", get(map_page))
                    .route("/map/state", get(map_state))
                    .route("/map/events", get(map_events))
                    .route("/healthz", get(|| async { "ok\n" }))
                    .route("/readyz", get(readyz))
                    .route("/admin/approve", post(approve))
                    .with_state(shared);
                match tokio::net::TcpListener::from_std(listener) {
                    Ok(l) => {
                        let app = app.into_make_service_with_connect_info::<SocketAddr>();
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

/// The live map: one page, no network but this endpoint (script and styles inline). The map
/// of the last window is written into it (`/*STATE*/`), so it draws at once; new windows come
/// as server-sent events.
pub const MAP_PAGE: &str = include_str!("map.html");

async fn map_page(State(s): State<Shared>) -> impl IntoResponse {
    // JSON inside a script element: "</" must not close it
    let state = s.metrics.golden.map().replace("</", "<\\/");
    (
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        MAP_PAGE.replacen("/*STATE*/", &state, 1),
    )
}

async fn map_state(State(s): State<Shared>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "application/json")],
        s.metrics.golden.map().to_string(),
    )
}

/// The map of the last window at once, then each new one as it is published (event
/// `window`); a comment every 15 s keeps proxies from closing the stream.
async fn map_events(State(s): State<Shared>) -> impl IntoResponse {
    use axum::response::sse::{Event, KeepAlive, Sse};
    let rx = s.metrics.golden.subscribe();
    let first = s.metrics.golden.map();
    let stream = futures_util::stream::unfold((Some(first), rx), |(first, mut rx)| async move {
        let json = match first {
            Some(json) => json,
            None => {
                rx.changed().await.ok()?;
                rx.borrow_and_update().clone()
            }
        };
        let event = Event::default().event("window").data(json.as_ref());
        Some((Ok::<_, std::convert::Infallible>(event), (None, rx)))
    });
    Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
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

/// Whether `a` and `b` are equal, in a time that does not depend on where they differ.
fn same_secret(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |d, (x, y)| d | (x ^ y)) == 0
}

async fn approve(
    State(s): State<Shared>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: String,
) -> (StatusCode, String) {
    let Some(admin) = &s.admin else {
        return (
            StatusCode::NOT_FOUND,
            "no admin endpoint: give [http] admin-token-file or admin-token-env\n".into(),
        );
    };
    if !peer.ip().is_loopback() {
        return (
            StatusCode::FORBIDDEN,
            "the admin endpoint answers loopback clients only\n".into(),
        );
    }
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    if !given.is_some_and(|g| same_secret(g.as_bytes(), admin.token.as_bytes())) {
        tracing::warn!(%peer, "admin endpoint: a request without the right token was refused");
        return (
            StatusCode::UNAUTHORIZED,
            "missing or wrong bearer token\n".into(),
        );
    }
    let id = body.trim();
    if id.is_empty() {
        return (
            StatusCode::BAD_REQUEST,
            "the body names the command's id\n".into(),
        );
    }
    // `ID@REVISION`; an id ends in `/<µs>`, so an `@` inside one is followed by a `/`
    let (id, revision) = match id.rsplit_once('@') {
        Some((id, r)) if !r.is_empty() && r.bytes().all(|b| b.is_ascii_digit()) => {
            match r.parse::<u32>() {
                Ok(r) => (id, Some(r)),
                Err(_) => {
                    return (
                        StatusCode::BAD_REQUEST,
                        format!("revision {r} after @ is out of range\n"),
                    );
                }
            }
        }
        _ => (id, None),
    };
    let (reply, answer) = tokio::sync::oneshot::channel();
    if admin
        .approvals
        .send(Approval {
            id: id.to_owned(),
            revision,
            reply,
        })
        .is_err()
    {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "the main loop has stopped\n".into(),
        );
    }
    match tokio::time::timeout(APPROVAL_WAIT, answer).await {
        Ok(Ok(Ok((status, done)))) => (
            StatusCode::from_u16(status).unwrap_or(StatusCode::OK),
            format!("{done}\n"),
        ),
        Ok(Ok(Err((status, why)))) => (
            StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            format!("{why}\n"),
        ),
        _ => (
            StatusCode::SERVICE_UNAVAILABLE,
            "the main loop did not answer in time\n".into(),
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
