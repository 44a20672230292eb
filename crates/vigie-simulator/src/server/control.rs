//! The control API under `/_sim/`: the operations of
//! [`RunningSimulator`](super::RunningSimulator) for a simulator run as a
//! separate process. These requests are neither counted nor logged.

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Serialize;

use super::faults::{FaultRule, lock};
use super::{JSON, Shared, TEXT};

pub(super) fn routes() -> Router<Arc<Shared>> {
    Router::new()
        .route("/_sim/manifest", get(manifest))
        .route("/_sim/requests", get(requests))
        .route("/_sim/news/{index}/edit", post(edit_article))
        .route("/_sim/layout/{layout}", post(set_layout))
        .route("/_sim/faults", post(add_fault))
}

fn json(status: StatusCode, value: &impl Serialize) -> Response {
    match serde_json::to_vec(value) {
        Ok(body) => (status, [(CONTENT_TYPE, JSON)], body).into_response(),
        Err(error) => error_text(StatusCode::INTERNAL_SERVER_ERROR, error.to_string()),
    }
}

fn error_text(status: StatusCode, message: String) -> Response {
    (status, [(CONTENT_TYPE, TEXT)], message + "\n").into_response()
}

async fn manifest(State(shared): State<Arc<Shared>>) -> Response {
    json(StatusCode::OK, &shared.manifest())
}

async fn requests(State(shared): State<Arc<Shared>>) -> Response {
    let log: Vec<_> = lock(&shared.log).iter().cloned().collect();
    json(StatusCode::OK, &log)
}

#[derive(Serialize)]
struct Edited {
    index: u64,
    revision: u32,
}

async fn edit_article(State(shared): State<Arc<Shared>>, Path(index): Path<String>) -> Response {
    let edited = index
        .parse::<u64>()
        .ok()
        .and_then(|index| Some((index, shared.news.edit(index)?)));
    match edited {
        Some((index, revision)) => json(StatusCode::OK, &Edited { index, revision }),
        None => error_text(
            StatusCode::NOT_FOUND,
            format!(
                "no article {index}: articles are 0 to {}",
                shared.news.articles().saturating_sub(1)
            ),
        ),
    }
}

#[derive(Serialize)]
struct Layout {
    layout_changed: bool,
}

async fn set_layout(State(shared): State<Arc<Shared>>, Path(layout): Path<String>) -> Response {
    let changed = match layout.as_str() {
        "changed" => true,
        "original" => false,
        other => {
            return error_text(
                StatusCode::BAD_REQUEST,
                format!("unknown layout {other:?}: use changed or original"),
            );
        }
    };
    shared.news.set_layout_changed(changed);
    json(
        StatusCode::OK,
        &Layout {
            layout_changed: changed,
        },
    )
}

async fn add_fault(State(shared): State<Arc<Shared>>, body: Bytes) -> Response {
    let rule: FaultRule = match serde_json::from_slice(&body) {
        Ok(rule) => rule,
        Err(error) => {
            return error_text(
                StatusCode::BAD_REQUEST,
                format!("invalid fault rule: {error}"),
            );
        }
    };
    if let Err(error) = rule.validate("fault") {
        return error_text(StatusCode::BAD_REQUEST, error.to_string());
    }
    shared.faults.add(rule.clone());
    json(StatusCode::CREATED, &rule)
}
