//! The web UI: static files compiled into the binary and served at `/` on the management
//! port. The UI is a client of `/api` and nothing else, so this module only hands out files.
//!
//! `WARREN_UI_DIR`, when set at start-up, serves the same file names from that directory
//! instead, read on every request: UI work then needs no rebuild. Only the names in
//! [`ASSETS`] are ever served, from either source, so the variable cannot expose other files.

use std::path::PathBuf;

use axum::extract::{Path, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use std::sync::Arc;

/// (file name, content type, embedded bytes)
const ASSETS: &[(&str, &str, &[u8])] = &[
    (
        "index.html",
        "text/html; charset=utf-8",
        include_bytes!("../ui/index.html"),
    ),
    (
        "app.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../ui/app.js"),
    ),
    (
        "style.css",
        "text/css; charset=utf-8",
        include_bytes!("../ui/style.css"),
    ),
    (
        "favicon.svg",
        "image/svg+xml",
        include_bytes!("../ui/favicon.svg"),
    ),
];

/// Where the files come from.
#[derive(Debug, Clone)]
pub(crate) struct Ui {
    dir: Option<PathBuf>,
}

impl Ui {
    pub(crate) fn from_env() -> Self {
        Ui {
            dir: std::env::var_os("WARREN_UI_DIR").map(PathBuf::from),
        }
    }
}

pub(crate) fn router() -> Router<Arc<Ui>> {
    Router::new()
        .route("/", get(index))
        .route("/index.html", get(index))
        .route("/favicon.ico", get(favicon))
        .route("/ui/{file}", get(asset))
}

async fn index(State(ui): State<Arc<Ui>>) -> Response {
    serve(&ui, "index.html")
}

async fn favicon(State(ui): State<Arc<Ui>>) -> Response {
    serve(&ui, "favicon.svg")
}

async fn asset(State(ui): State<Arc<Ui>>, Path(file): Path<String>) -> Response {
    serve(&ui, &file)
}

fn serve(ui: &Ui, name: &str) -> Response {
    let Some(&(name, content_type, embedded)) = ASSETS.iter().find(|(n, _, _)| *n == name) else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let body = match &ui.dir {
        Some(dir) => match std::fs::read(dir.join(name)) {
            Ok(bytes) => bytes,
            Err(e) => {
                tracing::warn!(file = name, error = %e, "WARREN_UI_DIR: cannot read UI file");
                return StatusCode::NOT_FOUND.into_response();
            }
        },
        None => embedded.to_vec(),
    };
    let mut response = body.into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    // The files change with the binary; a stale app.js against a newer API is worse than a
    // re-fetch of a few tens of kilobytes.
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    response
}
