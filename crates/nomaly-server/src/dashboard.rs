//! The web dashboard: three files embedded in the binary (no CDN, no fonts, works offline),
//! served with a Content-Security-Policy that lets the page talk to this server only.

use axum::extract::Path;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

const INDEX: &str = include_str!("../assets/index.html");
const APP_JS: &str = include_str!("../assets/app.js");
const APP_CSS: &str = include_str!("../assets/app.css");

/// Scripts, styles, fetches and images from this origin only (inline style attributes are the
/// progress bars' widths).
const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; \
     img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; \
     form-action 'self'";

fn page(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CONTENT_SECURITY_POLICY, CSP),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

pub async fn index() -> Response {
    page("text/html; charset=utf-8", INDEX)
}

/// The Cluster view as `nomaly scheduler` serves it at `/`: the same page in scheduler mode, which
/// reads Ballista's own REST API on the same port.
pub fn scheduler_page() -> axum::Router {
    async fn index() -> Response {
        // Leaked once per process: the page is served for the process's life.
        static PAGE: std::sync::OnceLock<String> = std::sync::OnceLock::new();
        let page = PAGE.get_or_init(|| INDEX.replace("<body>", "<body data-mode=\"scheduler\">"));
        self::page("text/html; charset=utf-8", page.as_str())
    }
    axum::Router::new()
        .route("/", axum::routing::get(index))
        .route("/ui/{file}", axum::routing::get(asset))
}

pub async fn asset(Path(file): Path<String>) -> Response {
    match file.as_str() {
        "app.js" => page("text/javascript; charset=utf-8", APP_JS),
        "app.css" => page("text/css; charset=utf-8", APP_CSS),
        _ => (StatusCode::NOT_FOUND, "no such file").into_response(),
    }
}
