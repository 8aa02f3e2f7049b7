//! Extractors for the JSON API whose rejections answer like every other API error: a JSON
//! body `{"error": …}` that names the field at fault and what was wrong, not axum's plain
//! text.

use axum::Json;
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;

/// A JSON request body.
pub struct ApiJson<T>(pub T);

/// A query string.
pub struct ApiQuery<T>(pub T);

/// A refused request: its status and a message for the user.
pub struct BadRequest(StatusCode, String);

impl IntoResponse for BadRequest {
    fn into_response(self) -> Response {
        (self.0, Json(serde_json::json!({ "error": self.1 }))).into_response()
    }
}

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for ApiJson<T> {
    type Rejection = BadRequest;

    async fn from_request(req: Request, state: &S) -> Result<Self, BadRequest> {
        match Json::<T>::from_request(req, state).await {
            Ok(Json(v)) => Ok(ApiJson(v)),
            Err(e) => Err(json_rejection(e)),
        }
    }
}

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = BadRequest;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, BadRequest> {
        match axum::extract::Query::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Query(v)) => Ok(ApiQuery(v)),
            Err(e) => Err(query_rejection(e)),
        }
    }
}

fn json_rejection(e: JsonRejection) -> BadRequest {
    let status = e.status();
    let message = match &e {
        // "Failed to deserialize the JSON body into the target type: action: unknown …": keep
        // the part that names the field.
        JsonRejection::JsonDataError(_) => {
            format!("invalid request body: {}", without_position(&detail(&e.body_text())))
        }
        JsonRejection::JsonSyntaxError(_) => format!("the request body is not valid JSON: {}", detail(&e.body_text())),
        JsonRejection::MissingJsonContentType(_) => {
            "the request body must be JSON: send `Content-Type: application/json`".to_owned()
        }
        _ => e.body_text(),
    };
    // A body that parses but does not fit is the caller's mistake like any other: 400.
    let status = if status == StatusCode::UNPROCESSABLE_ENTITY { StatusCode::BAD_REQUEST } else { status };
    BadRequest(status, message)
}

fn query_rejection(e: QueryRejection) -> BadRequest {
    BadRequest(StatusCode::BAD_REQUEST, format!("invalid query string: {}", detail(&e.body_text())))
}

/// The serde part of axum's rejection text (after its generic prefix).
fn detail(text: &str) -> String {
    text.split_once(": ").map_or(text, |(_, rest)| rest).to_owned()
}

/// serde_json's " at line 1 column 18" means nothing for a body that parsed: the field path
/// in front says where.
fn without_position(text: &str) -> String {
    if let Some((head, tail)) = text.rsplit_once(" at line ") {
        let mut parts = tail.split(" column ");
        if let (Some(line), Some(col), None) = (parts.next(), parts.next(), parts.next())
            && line.chars().all(|c| c.is_ascii_digit())
            && col.chars().all(|c| c.is_ascii_digit())
        {
            return head.to_owned();
        }
    }
    text.to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_are_cut_from_data_errors_only_at_the_end() {
        assert_eq!(without_position("action: unknown action `x` at line 1 column 18"), "action: unknown action `x`");
        assert_eq!(without_position("text says at line 5 column b"), "text says at line 5 column b");
        assert_eq!(without_position("no position"), "no position");
    }
}
