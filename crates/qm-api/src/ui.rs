//! The dashboard (`/ui/`): three static files built into the binary (no network, no build
//! chain), answered to anyone: they hold no data. The page asks for a token and reads
//! everything through the API with it, like any client, so the gate decides what it shows;
//! without a token it shows nothing. `GET /` sends browsers there.

use axum::Router;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;

const INDEX: &str = include_str!("ui/index.html");
const APP_JS: &str = include_str!("ui/app.js");
const APP_CSS: &str = include_str!("ui/app.css");

/// The paths answered without a token.
pub(crate) fn public(path: &str) -> bool {
    path == "/" || path == "/ui" || path.starts_with("/ui/")
}

/// What the page may load and where it may connect: this daemon only.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; \
                   img-src 'self' data:; connect-src 'self'; form-action 'self'; \
                   frame-ancestors 'none'; base-uri 'none'";

fn asset(body: &'static str, content_type: &'static str) -> Response {
    let mut r = (StatusCode::OK, body).into_response();
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    r
}

/// The dashboard's routes.
pub(crate) fn routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route("/", get(|| async { Redirect::to("/ui/") }))
        .route("/ui", get(|| async { Redirect::permanent("/ui/") }))
        .route(
            "/ui/",
            get(|| async { asset(INDEX, "text/html; charset=utf-8") }),
        )
        .route(
            "/ui/app.js",
            get(|| async { asset(APP_JS, "text/javascript; charset=utf-8") }),
        )
        .route(
            "/ui/app.css",
            get(|| async { asset(APP_CSS, "text/css; charset=utf-8") }),
        )
}

/// The assets' total size in bytes.
pub fn assets_bytes() -> usize {
    INDEX.len() + APP_JS.len() + APP_CSS.len()
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_assets_stay_small_and_load_nothing_from_elsewhere() {
        assert!(
            super::assets_bytes() < 300 * 1024,
            "{}",
            super::assets_bytes()
        );
        for text in [super::INDEX, super::APP_JS, super::APP_CSS] {
            assert!(!text.contains("http://") && !text.contains("https://"));
        }
    }
}
