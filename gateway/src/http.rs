//! Small HTTP response helpers shared by the listener (`server`), the
//! publish API (`api`) and the engine's refusals, so that none of them
//! imports another for them.

use bytes::Bytes;
use http::{Response, StatusCode, header};
use http_body_util::Full;

use crate::engine::Body;

/// A JSON response.
pub(crate) fn json(status: StatusCode, body: &serde_json::Value) -> Response<Body> {
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
        .unwrap_or_default()
}
