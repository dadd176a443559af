//! The status page (`/`) and `GET /api/v1/rollouts`, served by the daemon on its HTTP port.
//! Read-only; the page is one self-contained document (inline style and script, nothing fetched
//! from elsewhere) that polls the API and draws each rollout's error rate as inline SVG.

use axum::http::header;
use axum::response::IntoResponse;

/// The page.
pub const PAGE: &str = include_str!("assets/page.html");

/// `/` and `/status`.
pub async fn page() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            // Nothing but this origin: no CDN, no frames, no form posts.
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'; img-src 'self'; frame-ancestors 'none'; form-action 'none'",
            ),
            (header::CACHE_CONTROL, "no-store"),
        ],
        PAGE,
    )
}
