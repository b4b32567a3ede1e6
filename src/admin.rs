//! Admin HTTP server: `/metrics` (Prometheus text), `/healthz`, `/readyz`.
//! Runs on the main thread's small tokio runtime, off the data path.
use std::convert::Infallible;
use std::net::SocketAddr;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

use crate::telemetry::Telemetry;

/// Bind the admin listener (so the resolved address is known before serving).
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}

/// Serve until the task is dropped.
pub async fn serve(listener: TcpListener, telemetry: Telemetry) {
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(conn) => conn,
            Err(e) => {
                tracing::warn!(error = %e, "admin accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let telemetry = telemetry.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| {
                let telemetry = telemetry.clone();
                async move { Ok::<_, Infallible>(respond(&req, &telemetry)) }
            });
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

fn text(status: StatusCode, content_type: &str, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header("content-type", content_type)
        .body(Full::new(body.into()))
        .expect("static response parts are valid")
}

fn respond(req: &Request<Incoming>, telemetry: &Telemetry) -> Response<Full<Bytes>> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return text(StatusCode::METHOD_NOT_ALLOWED, "text/plain", "GET only\n");
    }
    match req.uri().path() {
        "/metrics" => text(
            StatusCode::OK,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            telemetry.render(),
        ),
        "/healthz" => text(StatusCode::OK, "text/plain", "ok\n"),
        "/debug/cardinality" => text(
            StatusCode::OK,
            "application/json",
            telemetry.cardinality_json(20),
        ),
        "/debug/rejects" => text(StatusCode::OK, "application/json", telemetry.rejects_json()),
        "/readyz" => {
            if telemetry.ready() {
                text(StatusCode::OK, "text/plain", "ready\n")
            } else {
                text(StatusCode::SERVICE_UNAVAILABLE, "text/plain", "not ready\n")
            }
        }
        _ => text(
            StatusCode::NOT_FOUND,
            "text/plain",
            "not found; try /metrics, /healthz, /readyz, /debug/cardinality or /debug/rejects\n",
        ),
    }
}
