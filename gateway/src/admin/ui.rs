//! The Admin UI's static files (`@socket.io/admin-ui`'s `ui/dist`), served
//! under `/admin/` so operators need no external site: the page then talks
//! to the gateway it was loaded from.
//!
//! Only files inside `admin.ui_dir` are served: the request path is split
//! into plain segments and any `..`, `.`, empty, backslash or percent-encoded
//! segment is refused before touching the file system; the joined path is
//! also checked to stay under the canonical folder (symlinks out of it).

use std::path::{Path, PathBuf};

use bytes::Bytes;
use http::{Response, StatusCode, header};
use http_body_util::Full;

use crate::engine::Body;

/// The URL prefix the UI is served under.
pub const PREFIX: &str = "/admin";

/// The folder the UI is served from.
pub struct UiFiles {
    root: PathBuf,
}

impl UiFiles {
    /// `dir` was checked at start to hold an `index.html`.
    pub fn new(dir: &Path) -> UiFiles {
        UiFiles {
            root: dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf()),
        }
    }

    /// Whether `path` is one of the UI's URLs.
    pub fn handles(path: &str) -> bool {
        path == PREFIX || path.starts_with("/admin/")
    }

    /// Answers a GET for `path` (`/admin` or `/admin/...`).
    pub async fn serve(&self, path: &str) -> Response<Body> {
        let Some(rest) = path.strip_prefix("/admin/") else {
            // Relative asset URLs in index.html need the trailing slash.
            return Response::builder()
                .status(StatusCode::MOVED_PERMANENTLY)
                .header(header::LOCATION, "/admin/")
                .body(Full::new(Bytes::new()))
                .unwrap_or_default();
        };
        let rest = if rest.is_empty() { "index.html" } else { rest };
        let Some(file) = self.resolve(rest) else {
            return not_found();
        };
        match tokio::fs::read(&file).await {
            Ok(bytes) => {
                let mime = mime_guess::from_path(&file).first_or_octet_stream();
                Response::builder()
                    .header(header::CONTENT_TYPE, mime.as_ref())
                    .header("x-content-type-options", "nosniff")
                    .body(Full::new(Bytes::from(bytes)))
                    .unwrap_or_default()
            }
            Err(_) => not_found(),
        }
    }

    /// The file for a relative URL path, if it is a plain path inside the root.
    fn resolve(&self, rest: &str) -> Option<PathBuf> {
        let mut file = self.root.clone();
        for segment in rest.split('/') {
            if segment.is_empty()
                || segment == "."
                || segment == ".."
                || segment.contains(['\\', '%', '\0'])
            {
                return None;
            }
            file.push(segment);
        }
        let real = file.canonicalize().ok()?;
        (real.starts_with(&self.root) && real.is_file()).then_some(real)
    }
}

fn not_found() -> Response<Body> {
    Response::builder()
        .status(StatusCode::NOT_FOUND)
        .header(header::CONTENT_TYPE, "text/plain")
        .body(Full::new(Bytes::from_static(b"not found")))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_paths_inside_the_folder() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("js")).unwrap();
        std::fs::write(dir.path().join("index.html"), "<html>").unwrap();
        std::fs::write(dir.path().join("js/app.js"), "1").unwrap();
        let ui = UiFiles::new(dir.path());
        assert!(ui.resolve("index.html").is_some());
        assert!(ui.resolve("js/app.js").is_some());
        for bad in [
            "../index.html",
            "js/../index.html",
            "%2e%2e/etc/passwd",
            "js//app.js",
            "./index.html",
            "js",
            "missing.js",
            "..\\index.html",
        ] {
            assert!(ui.resolve(bad).is_none(), "{bad}");
        }
    }
}
