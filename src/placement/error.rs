//! Typed errors of the Placement/Keystone client.
//!
//! Callers branch on these (a generation conflict is redriven by the resource tracker, an
//! inventory in use is fatal for that class, a name conflict is fatal for the node), so
//! each placement outcome nova treats specially has its own variant.

use uuid::Uuid;

/// One failed placement or keystone answer, as much as the body tells.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub method: String,
    pub path: String,
    pub status: u16,
    /// `errors[0].code`; placement only sends it at microversion >= 1.23.
    pub code: Option<String>,
    /// `errors[0].title`, e.g. `Conflict`.
    pub title: Option<String>,
    /// `errors[0].detail`, or the raw body when it is not placement's error document.
    pub message: String,
    /// Placement's own request id (`x-openstack-request-id` answer header).
    pub request_id: Option<String>,
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {} returned {}", self.method, self.path, self.status)?;
        if let Some(code) = &self.code {
            write!(f, " ({code})")?;
        }
        if !self.message.is_empty() {
            write!(f, ": {}", self.message)?;
        }
        Ok(())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PlacementError {
    #[error("invalid [placement] option {option}: {reason}")]
    Config { option: String, reason: String },

    /// The TLS settings (`cafile`, `insecure`) could not be made.
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),

    #[error("cannot build http client")]
    HttpClient(#[source] reqwest::Error),

    /// Connection refused, TLS failure, timeout, or a body that could not be read.
    #[error("{method} {url} failed")]
    Transport {
        method: String,
        url: String,
        #[source]
        source: reqwest::Error,
    },

    #[error("keystone authentication failed: {0}")]
    Auth(Box<ApiError>),

    #[error("keystone answered without an X-Subject-Token header")]
    MissingSubjectToken,

    #[error("no {service_type} endpoint in the service catalog for interfaces {interfaces:?} in region {region}")]
    EndpointNotFound {
        service_type: String,
        interfaces: Vec<String>,
        region: String,
    },

    #[error("cannot decode answer of {method} {path}")]
    Decode {
        method: String,
        path: String,
        #[source]
        source: serde_json::Error,
    },

    /// Any placement answer without a more specific meaning.
    #[error("placement request failed: {0}")]
    Api(Box<ApiError>),

    /// Still 409 `placement.concurrent_update` after refreshing the generation each time.
    #[error("resource provider {uuid} generation conflict after {attempts} attempts")]
    GenerationConflict {
        uuid: Uuid,
        attempts: u32,
        last: Box<ApiError>,
    },

    /// Still 409 `placement.concurrent_update` on a provider while writing allocations
    /// (placement-internal race; nova's `@retries` gives up the same way).
    #[error("allocations of consumer {consumer} still conflict after {attempts} attempts")]
    AllocationConflict {
        consumer: Uuid,
        attempts: u32,
        last: Box<ApiError>,
    },

    /// 409 `placement.inventory.inuse`: a removed class still has allocations.
    #[error("inventory of resource provider {uuid} is in use: {}", .error.message)]
    InventoryInUse { uuid: Uuid, error: Box<ApiError> },

    /// Another provider holds the name (nova: `ResourceProviderCreationFailed`, fatal).
    #[error("resource provider name {name} is taken by another provider")]
    ProviderNameConflict { name: String, error: Box<ApiError> },

    /// Delete refused with 409: the provider still has allocations.
    #[error("resource provider {uuid} is in use")]
    ProviderInUse { uuid: Uuid, error: Box<ApiError> },

    /// Someone else changed the consumer's allocations; the caller must re-read.
    #[error("consumer {consumer} generation conflict")]
    ConsumerGenerationConflict {
        consumer: Uuid,
        error: Box<ApiError>,
    },

    /// Placement refused to create a trait (an unknown standard trait, or a bad name).
    #[error("cannot create trait {name}")]
    TraitCreationFailed { name: String, error: Box<ApiError> },

    /// Placement refused a custom resource class (nova: `InvalidResourceClass`).
    #[error("invalid resource class {name}")]
    InvalidResourceClass { name: String, error: Box<ApiError> },

    /// The provider vanished between the write and the generation refresh.
    #[error("resource provider {0} not found")]
    ProviderNotFound(Uuid),
}

impl PlacementError {
    /// The placement answer behind this error, where there was one.
    pub fn api_error(&self) -> Option<&ApiError> {
        match self {
            Self::Auth(e) | Self::Api(e) => Some(e.as_ref()),
            Self::GenerationConflict { last: e, .. }
            | Self::AllocationConflict { last: e, .. }
            | Self::InventoryInUse { error: e, .. }
            | Self::ProviderNameConflict { error: e, .. }
            | Self::ProviderInUse { error: e, .. }
            | Self::ConsumerGenerationConflict { error: e, .. }
            | Self::TraitCreationFailed { error: e, .. }
            | Self::InvalidResourceClass { error: e, .. } => Some(e.as_ref()),
            _ => None,
        }
    }

    /// HTTP status of the failed answer.
    pub fn status(&self) -> Option<u16> {
        self.api_error().map(|e| e.status)
    }

    /// Placement's `errors[0].code`.
    pub fn code(&self) -> Option<&str> {
        self.api_error().and_then(|e| e.code.as_deref())
    }

    /// Worth retrying later (next periodic run): the service was unreachable or busy.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Transport { .. }
            | Self::GenerationConflict { .. }
            | Self::AllocationConflict { .. } => true,
            Self::Api(e) | Self::Auth(e) => e.status >= 500,
            _ => false,
        }
    }

    pub(crate) fn config(option: &str, reason: impl Into<String>) -> Self {
        Self::Config {
            option: option.to_owned(),
            reason: reason.into(),
        }
    }
}
