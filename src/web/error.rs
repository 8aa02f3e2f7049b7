//! One error type for the API: each `CoreError` becomes a status and a message for the user.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use crate::core::CoreError;
use crate::pods::EngineError;

pub struct ApiError(pub CoreError);

impl From<CoreError> for ApiError {
    fn from(e: CoreError) -> Self {
        ApiError(e)
    }
}

pub fn status_of(e: &CoreError) -> StatusCode {
    use CoreError::*;
    match e {
        NotFound(_) | TaskNotFound(_) | ProposalNotFound(_) => StatusCode::NOT_FOUND,
        Invalid(_) | InvalidName(_) | Source(_) | DevContainer(_) | Plan(_) | Config(_) => StatusCode::BAD_REQUEST,
        NameTaken(_)
        | PodGone(_)
        | Busy { .. }
        | ProposalClosed { .. }
        | VolumesLeft { .. }
        | NotRunning { .. }
        | Conflict(_)
        | TaskEnded { .. }
        | FirstTask { .. } => StatusCode::CONFLICT,
        Github(_) => StatusCode::BAD_GATEWAY,
        ImageMissing { .. } | SecretMissing { .. } | OpencodeMissing(_) => StatusCode::UNPROCESSABLE_ENTITY,
        Engine(EngineError::Unavailable { .. }) | AgentNotReady { .. } | Agent(_) => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = status_of(&self.0);
        if status == StatusCode::INTERNAL_SERVER_ERROR {
            tracing::error!("{}", self.0);
        }
        (status, Json(serde_json::json!({ "error": self.0.to_string() }))).into_response()
    }
}
