//! The dispatcher console: plain ES modules and CSS from `console/`, embedded in the
//! binary at build time (no separate server, nothing fetched from elsewhere), served at
//! `/` and `/console/…` with a strict content security policy. The page signs in with an
//! API key (kept in the tab's session storage) and reads `/api/v1` like any client.

use axum::Router;
use axum::extract::Path;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use super::ApiState;

/// Every file of `console/`: its path under `/console/` and its bytes. A test checks that
/// the list and the directory agree.
pub const ASSETS: &[(&str, &str)] = &[
    ("index.html", include_str!("../../console/index.html")),
    ("app.css", include_str!("../../console/app.css")),
    ("app.js", include_str!("../../console/app.js")),
    ("js/api.js", include_str!("../../console/js/api.js")),
    ("js/board.js", include_str!("../../console/js/board.js")),
    ("js/bus.js", include_str!("../../console/js/bus.js")),
    ("js/chart.js", include_str!("../../console/js/chart.js")),
    ("js/device.js", include_str!("../../console/js/device.js")),
    ("js/fleet.js", include_str!("../../console/js/fleet.js")),
    (
        "js/incidents.js",
        include_str!("../../console/js/incidents.js"),
    ),
    ("js/kpis.js", include_str!("../../console/js/kpis.js")),
    ("js/map.js", include_str!("../../console/js/map.js")),
    ("js/models.js", include_str!("../../console/js/models.js")),
    ("js/replies.js", include_str!("../../console/js/replies.js")),
    ("js/stream.js", include_str!("../../console/js/stream.js")),
    (
        "js/technicians.js",
        include_str!("../../console/js/technicians.js"),
    ),
    ("js/ticket.js", include_str!("../../console/js/ticket.js")),
    ("js/ui.js", include_str!("../../console/js/ui.js")),
    ("js/util.js", include_str!("../../console/js/util.js")),
];

/// What the page may load and where it may connect: only this server.
const POLICY: &str = "default-src 'self'; img-src 'self' data:; style-src 'self'; \
                      script-src 'self'; connect-src 'self'; frame-ancestors 'none'; \
                      base-uri 'none'; form-action 'self'";

pub fn router() -> Router<ApiState> {
    Router::new()
        .route("/", get(|| async { asset("index.html") }))
        .route(
            "/console/{*path}",
            get(|Path(path): Path<String>| async move { asset(&path) }),
        )
}

fn asset(path: &str) -> Response {
    let Some((_, body)) = ASSETS.iter().find(|(name, _)| *name == path) else {
        return (StatusCode::NOT_FOUND, "no such console file\n").into_response();
    };
    let content_type = match path.rsplit_once('.').map(|(_, ext)| ext) {
        Some("html") => "text/html; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("js") => "text/javascript; charset=utf-8",
        Some("svg") => "image/svg+xml",
        _ => "application/octet-stream",
    };
    let mut response = (*body).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(POLICY),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    // A new binary serves new files: check each time (cheap; they are small).
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_console_file_is_embedded() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("console");
        let mut on_disk = Vec::new();
        let mut stack = vec![root.clone()];
        while let Some(dir) = stack.pop() {
            for entry in std::fs::read_dir(&dir).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    stack.push(path);
                } else {
                    let name = path
                        .strip_prefix(&root)
                        .unwrap()
                        .to_string_lossy()
                        .replace('\\', "/");
                    on_disk.push(name);
                }
            }
        }
        on_disk.sort();
        let mut embedded: Vec<String> = ASSETS.iter().map(|(n, _)| (*n).to_string()).collect();
        embedded.sort();
        assert_eq!(
            on_disk, embedded,
            "console/ and console::ASSETS must list the same files"
        );
    }

    #[test]
    fn assets_have_their_type_and_policy() {
        let page = asset("index.html");
        assert_eq!(
            page.headers()[header::CONTENT_TYPE],
            "text/html; charset=utf-8"
        );
        assert!(
            page.headers()[header::CONTENT_SECURITY_POLICY]
                .to_str()
                .unwrap()
                .contains("script-src 'self'")
        );
        assert_eq!(
            asset("js/api.js").headers()[header::CONTENT_TYPE],
            "text/javascript; charset=utf-8"
        );
        assert_eq!(asset("../Cargo.toml").status(), StatusCode::NOT_FOUND);
    }
}
