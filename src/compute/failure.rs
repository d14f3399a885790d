//! The one mapping from compute errors to the Nova exceptions they are
//! reported as: the class of the fault a failed cast records, and the
//! `failure` a call replies with. Every error variant is named in the match
//! (no catch-all), so a new variant does not compile until it is mapped.

use serde_json::{json, Map};

use super::ComputeError;
use crate::driver::DriverError;
use crate::rpc::{Failure, RpcError};

impl ComputeError {
    /// The nova exception class this error is reported as in faults and failures.
    pub fn nova_class(&self) -> &'static str {
        use ComputeError as C;
        use DriverError as D;
        match self {
            C::Driver(d) => match d {
                D::ImageNotFound(_) => "ImageNotFound",
                D::NotFound(_) => "InstanceNotFound",
                D::Invalid(_) => "InvalidInput",
                D::Image(_) => "ImageUnacceptable",
                D::Conflict(_)
                | D::RuntimeUnavailable(_)
                | D::Runtime(_)
                | D::Storage(_)
                | D::Store(_)
                | D::Device(_)
                | D::Nic(_)
                | D::Vif(_)
                | D::Io { .. } => "NovaException",
            },
            C::Network(n) => n.nova_class(),
            C::Invalid(_) => "InvalidInput",
            C::Glance(_) => "ImageUnacceptable",
            C::ResourcesUnavailable(_) => "ComputeResourcesUnavailable",
            C::NotRescuable { .. } => "InstanceNotRescuable",
            C::Rpc(RpcError::Timeout { .. }) => "MessagingTimeout",
            C::Rpc(_)
            | C::Options(_)
            | C::Object(_)
            | C::Encode(_)
            | C::Decode(_)
            | C::Placement(_)
            | C::Io { .. } => "NovaException",
        }
    }

    /// The `nova.exception` failure a call replies with. `instance`: the
    /// instance the call was about, named as Nova names it in
    /// `InstanceNotFound` (`instance_id`).
    pub fn to_failure(&self, instance: Option<&str>) -> Failure {
        let class = self.nova_class();
        match (class, instance) {
            ("InstanceNotFound", Some(uuid)) => {
                let mut kwargs = Map::new();
                kwargs.insert("instance_id".into(), json!(uuid));
                Failure::nova(
                    class,
                    &format!("Instance {uuid} could not be found."),
                    kwargs,
                )
            }
            _ => Failure::nova(class, &self.full_message(), Map::new()),
        }
    }
}

impl From<DriverError> for Failure {
    fn from(e: DriverError) -> Self {
        ComputeError::Driver(e).to_failure(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::RuntimeError;

    fn io() -> std::io::Error {
        std::io::Error::other("boom")
    }

    /// One error of every variant, with the class it must be reported as.
    fn every_variant() -> Vec<(ComputeError, &'static str)> {
        use ComputeError as C;
        use DriverError as D;
        let drv = |d: DriverError| C::Driver(d);
        vec![
            (drv(D::NotFound("u".into())), "InstanceNotFound"),
            (drv(D::ImageNotFound("i".into())), "ImageNotFound"),
            (drv(D::Conflict("c".into())), "NovaException"),
            (drv(D::Invalid("v".into())), "InvalidInput"),
            (
                drv(D::RuntimeUnavailable(RuntimeError::NotFound)),
                "NovaException",
            ),
            (drv(D::Runtime(RuntimeError::Timeout(1))), "NovaException"),
            (
                drv(D::Image(crate::image::ImageError::InUse("x".into()))),
                "ImageUnacceptable",
            ),
            (
                drv(D::Io {
                    path: "/p".into(),
                    source: io(),
                }),
                "NovaException",
            ),
            (C::Invalid("bad".into()), "InvalidInput"),
            (
                C::Network(super::super::network::NetworkError::PortBindingFailed(
                    "p".into(),
                )),
                "PortBindingFailed",
            ),
            (C::Glance("gone".into()), "ImageUnacceptable"),
            (
                C::ResourcesUnavailable("full".into()),
                "ComputeResourcesUnavailable",
            ),
            (
                C::NotRescuable {
                    uuid: "u".into(),
                    reason: "r".into(),
                },
                "InstanceNotRescuable",
            ),
            (
                C::Encode(serde_json::from_str::<u8>("x").unwrap_err()),
                "NovaException",
            ),
            (
                C::Decode(serde_json::from_str::<u8>("x").unwrap_err()),
                "NovaException",
            ),
            (
                C::Io {
                    path: "/q".into(),
                    source: io(),
                },
                "NovaException",
            ),
        ]
    }

    #[test]
    fn every_error_has_its_nova_class() {
        for (e, class) in every_variant() {
            assert_eq!(e.nova_class(), class, "{e:?}");
            let f = e.to_failure(None);
            assert_eq!(f.class, class);
            assert_eq!(f.module, "nova.exception");
            assert!(!f.message.is_empty());
        }
    }

    #[test]
    fn instance_not_found_names_the_instance() {
        let e = ComputeError::Driver(DriverError::NotFound("u-1".into()));
        let f = e.to_failure(Some("u-1"));
        assert_eq!(f.message, "Instance u-1 could not be found.");
        assert_eq!(f.kwargs.get("instance_id"), Some(&json!("u-1")));
        let f = Failure::from(DriverError::Invalid("no".into()));
        assert_eq!(
            (f.class.as_str(), f.message.as_str()),
            ("InvalidInput", "no")
        );
    }
}
