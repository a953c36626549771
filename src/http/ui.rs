//! The web UI (placeholder until the pages land).

use axum::routing::get;

use super::shared::AppState;

pub fn routes() -> axum::Router<AppState> {
    axum::Router::new().route("/", get(|| async { "Postern sandbox" }))
}
