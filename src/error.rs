//! The crate's error type and the one place that maps an error to an HTTP
//! status and a Matrix `errcode`.
//!
//! Spec: <https://spec.matrix.org/latest/client-server-api/#standard-error-response>.

use std::fmt;

/// Everything that can go wrong while serving a request or running a command.
#[derive(Debug)]
#[allow(dead_code)] // some variants serve the room API, which lands next
pub enum Error {
    /// The request is not allowed (403 `M_FORBIDDEN`).
    Forbidden(String),
    /// The body is not valid JSON (400 `M_NOT_JSON`).
    NotJson(String),
    /// The JSON is valid but not of the expected shape (400 `M_BAD_JSON`).
    BadJson(String),
    /// A required parameter is missing (400 `M_MISSING_PARAM`).
    MissingParam(String),
    /// A parameter has a wrong value (400 `M_INVALID_PARAM`).
    InvalidParam(String),
    /// The request body is larger than allowed (413 `M_TOO_LARGE`).
    TooLarge(String),
    /// No access token was supplied (401 `M_MISSING_TOKEN`).
    MissingToken,
    /// The access token is not known (401 `M_UNKNOWN_TOKEN`).
    UnknownToken { soft_logout: bool },
    /// No such resource (404 `M_NOT_FOUND`).
    NotFound(String),
    /// The endpoint or method is not known (404/405 `M_UNRECOGNIZED`).
    Unrecognized { method_not_allowed: bool },
    /// The user ID is taken (400 `M_USER_IN_USE`).
    UserInUse,
    /// The user ID is not valid (400 `M_INVALID_USERNAME`).
    InvalidUsername(String),
    /// Registration is disabled, or the login type is refused (403 `M_FORBIDDEN`).
    RegistrationDisabled,
    /// The account is deactivated (403 `M_USER_DEACTIVATED`).
    UserDeactivated,
    /// Too many requests (429 `M_LIMIT_EXCEEDED`).
    LimitExceeded { retry_after_ms: u64 },
    /// The room version is not supported (400 `M_UNSUPPORTED_ROOM_VERSION`).
    UnsupportedRoomVersion(String),
    /// The other server cannot take part in a room of this version (400
    /// `M_INCOMPATIBLE_ROOM_VERSION`, naming the room's version as the spec asks).
    IncompatibleRoomVersion { room_version: String, message: String },
    /// Keys were uploaded to a backup version that is not the current one
    /// (403 `M_WRONG_ROOM_KEYS_VERSION`, naming the current version).
    WrongRoomKeysVersion { current_version: String },
    /// Any other error with its own errcode and status.
    Matrix { status: u16, errcode: &'static str, message: String },
    /// User-interactive auth needs another stage (401 with the UIA body).
    InteractiveAuth(serde_json::Value),
    /// The database failed (500 `M_UNKNOWN`).
    Database(rusqlite::Error),
    /// An internal failure that is not the client's fault (500 `M_UNKNOWN`).
    Internal(String),
}

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// The HTTP status and `errcode` for this error.
    pub fn status_and_errcode(&self) -> (u16, &'static str) {
        match self {
            Error::Forbidden(_) => (403, "M_FORBIDDEN"),
            Error::NotJson(_) => (400, "M_NOT_JSON"),
            Error::BadJson(_) => (400, "M_BAD_JSON"),
            Error::MissingParam(_) => (400, "M_MISSING_PARAM"),
            Error::InvalidParam(_) => (400, "M_INVALID_PARAM"),
            Error::TooLarge(_) => (413, "M_TOO_LARGE"),
            Error::MissingToken => (401, "M_MISSING_TOKEN"),
            Error::UnknownToken { .. } => (401, "M_UNKNOWN_TOKEN"),
            Error::NotFound(_) => (404, "M_NOT_FOUND"),
            Error::Unrecognized { method_not_allowed: false } => (404, "M_UNRECOGNIZED"),
            Error::Unrecognized { method_not_allowed: true } => (405, "M_UNRECOGNIZED"),
            Error::UserInUse => (400, "M_USER_IN_USE"),
            Error::InvalidUsername(_) => (400, "M_INVALID_USERNAME"),
            Error::RegistrationDisabled => (403, "M_FORBIDDEN"),
            Error::UserDeactivated => (403, "M_USER_DEACTIVATED"),
            Error::LimitExceeded { .. } => (429, "M_LIMIT_EXCEEDED"),
            Error::UnsupportedRoomVersion(_) => (400, "M_UNSUPPORTED_ROOM_VERSION"),
            Error::WrongRoomKeysVersion { .. } => (403, "M_WRONG_ROOM_KEYS_VERSION"),
            Error::IncompatibleRoomVersion { .. } => (400, "M_INCOMPATIBLE_ROOM_VERSION"),
            Error::Matrix { status, errcode, .. } => (*status, errcode),
            Error::InteractiveAuth(_) => (401, "M_FORBIDDEN"),
            Error::Database(_) | Error::Internal(_) => (500, "M_UNKNOWN"),
        }
    }

    /// The JSON body sent to the client.
    pub fn to_json(&self) -> serde_json::Value {
        let (_, errcode) = self.status_and_errcode();
        match self {
            Error::InteractiveAuth(body) => body.clone(),
            Error::UnknownToken { soft_logout } => serde_json::json!({
                "errcode": errcode, "error": self.to_string(), "soft_logout": soft_logout,
            }),
            Error::LimitExceeded { retry_after_ms } => serde_json::json!({
                "errcode": errcode, "error": self.to_string(), "retry_after_ms": retry_after_ms,
            }),
            Error::IncompatibleRoomVersion { room_version, message } => serde_json::json!({
                "errcode": errcode, "error": message, "room_version": room_version,
            }),
            Error::WrongRoomKeysVersion { current_version } => serde_json::json!({
                "errcode": errcode, "error": self.to_string(), "current_version": current_version,
            }),
            _ => serde_json::json!({"errcode": errcode, "error": self.to_string()}),
        }
    }

    /// Shorthand for a `Matrix` error.
    pub fn matrix(status: u16, errcode: &'static str, message: impl Into<String>) -> Error {
        Error::Matrix { status, errcode, message: message.into() }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Forbidden(message)
            | Error::NotJson(message)
            | Error::BadJson(message)
            | Error::MissingParam(message)
            | Error::InvalidParam(message)
            | Error::TooLarge(message)
            | Error::NotFound(message)
            | Error::InvalidUsername(message)
            | Error::Internal(message)
            | Error::Matrix { message, .. } => f.write_str(message),
            Error::UnsupportedRoomVersion(version) => {
                write!(f, "room version {version} is not supported")
            }
            Error::WrongRoomKeysVersion { .. } => f.write_str("wrong backup version"),
            Error::IncompatibleRoomVersion { message, .. } => f.write_str(message),
            Error::MissingToken => f.write_str("missing access token"),
            Error::UnknownToken { .. } => f.write_str("unknown access token"),
            Error::Unrecognized { .. } => f.write_str("unrecognized request"),
            Error::UserInUse => f.write_str("user ID already taken"),
            Error::RegistrationDisabled => f.write_str("registration is disabled"),
            Error::UserDeactivated => f.write_str("this account has been deactivated"),
            Error::LimitExceeded { .. } => f.write_str("too many requests"),
            Error::InteractiveAuth(_) => f.write_str("additional authentication is required"),
            Error::Database(error) => write!(f, "database error: {error}"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Database(error) => Some(error),
            _ => None,
        }
    }
}

impl From<rusqlite::Error> for Error {
    fn from(error: rusqlite::Error) -> Error {
        Error::Database(error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_map_to_spec_statuses() {
        let cases: [(Error, u16, &str); 5] = [
            (Error::NotJson("x".into()), 400, "M_NOT_JSON"),
            (Error::MissingToken, 401, "M_MISSING_TOKEN"),
            (Error::TooLarge("x".into()), 413, "M_TOO_LARGE"),
            (Error::Unrecognized { method_not_allowed: false }, 404, "M_UNRECOGNIZED"),
            (Error::LimitExceeded { retry_after_ms: 5 }, 429, "M_LIMIT_EXCEEDED"),
        ];
        for (error, status, errcode) in cases {
            assert_eq!(error.status_and_errcode(), (status, errcode));
            assert_eq!(error.to_json()["errcode"], errcode);
        }
    }
}
