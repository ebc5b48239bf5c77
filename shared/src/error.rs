//! The error type every domain function returns; callers branch on its variants.

/// A domain failure. The API maps each variant to one HTTP status and a stable code.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The row does not exist, or exists in a tenant the caller cannot see.
    #[error("{0} not found")]
    NotFound(&'static str),
    /// A unique or foreign-key constraint refused the write.
    #[error("conflict on {constraint}")]
    Conflict {
        /// The violated constraint's name, as written in the migrations.
        constraint: String,
    },
    /// The input is well-formed but semantically wrong (unknown role id, …).
    #[error("{0}")]
    Invalid(String),
    /// The caller is authenticated but not allowed to do this.
    #[error("{message}")]
    Forbidden {
        /// Stable snake_case code (`permission_denied`, `tenant_disabled`, …).
        code: &'static str,
        /// Human-readable explanation, safe to show.
        message: String,
    },
    /// Any other database failure: never shown to clients.
    #[error("database error")]
    Database(#[source] sqlx::Error),
}

/// Shorthand for domain results.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl From<sqlx::Error> for Error {
    fn from(err: sqlx::Error) -> Self {
        if let sqlx::Error::Database(db) = &err
            && (db.is_unique_violation() || db.is_foreign_key_violation())
        {
            return Error::Conflict {
                constraint: db.constraint().unwrap_or("unknown").to_owned(),
            };
        }
        Error::Database(err)
    }
}

impl Error {
    /// Whether the database refused the data itself (an invalid value such as a NUL
    /// character, a value too large): trying again cannot succeed, unlike after a lost
    /// connection or a lock timeout.
    pub fn is_data_rejection(&self) -> bool {
        let Error::Database(sqlx::Error::Database(db)) = self else {
            return false;
        };
        // SQLSTATE classes 22 (data exception) and 54 (program limit exceeded).
        db.code()
            .is_some_and(|code| code.starts_with("22") || code.starts_with("54"))
    }

    /// A `Forbidden` with the generic `permission_denied` code.
    pub fn permission_denied(permission: &str) -> Self {
        Error::Forbidden {
            code: "permission_denied",
            message: format!("missing permission {permission}"),
        }
    }
}
