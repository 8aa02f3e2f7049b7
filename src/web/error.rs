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

/// Every error has its status here, chosen by what a client can do about it (no catch-all:
/// a new variant must be placed).
pub fn status_of(e: &CoreError) -> StatusCode {
    use crate::core::source::SourceError;
    use CoreError::*;
    match e {
        NotFound(_) | TaskNotFound(_) | ProposalNotFound(_) | SetNotFound(_) => StatusCode::NOT_FOUND,
        Invalid(_) | InvalidName(_) | DevContainer(_) | Plan(_) | Config(_) => StatusCode::BAD_REQUEST,
        Source(SourceError::Timeout { .. }) => StatusCode::GATEWAY_TIMEOUT,
        Source(SourceError::Git(_)) => StatusCode::INTERNAL_SERVER_ERROR,
        Source(_) => StatusCode::BAD_REQUEST,
        NameTaken(_)
        | PodGone(_)
        | Busy { .. }
        | ProposalClosed { .. }
        | VolumesLeft { .. }
        | NotRunning { .. }
        | Conflict(_)
        | TaskEnded { .. } => StatusCode::CONFLICT,
        Github(_) => StatusCode::BAD_GATEWAY,
        // What the user's repository or machine must provide.
        ImageMissing { .. }
        | SecretMissing { .. }
        | OpencodeMissing(_)
        | Lifecycle { .. }
        | ProposalTooLarge { .. } => StatusCode::UNPROCESSABLE_ENTITY,
        Engine(e) => match e {
            EngineError::Unavailable { .. } | EngineError::Timeout { .. } => StatusCode::SERVICE_UNAVAILABLE,
            // An object vanished or is in the way: the state changed under the request.
            EngineError::NotFound { .. } | EngineError::Conflict { .. } | EngineError::AlreadyExists { .. } => {
                StatusCode::CONFLICT
            }
            EngineError::Pull { .. } | EngineError::Build { .. } | EngineError::OutputTooLarge { .. } => {
                StatusCode::UNPROCESSABLE_ENTITY
            }
            EngineError::Api { .. } | EngineError::Spec(_) | EngineError::Output { .. } => {
                StatusCode::INTERNAL_SERVER_ERROR
            }
            EngineError::Kubernetes { status: 501, .. } => StatusCode::NOT_IMPLEMENTED,
            EngineError::Kubernetes { .. } => StatusCode::BAD_GATEWAY,
        },
        AgentNotReady { .. } | Agent(_) => StatusCode::SERVICE_UNAVAILABLE,
        Io(_) | Store(_) | Git(_) => StatusCode::INTERNAL_SERVER_ERROR,
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
