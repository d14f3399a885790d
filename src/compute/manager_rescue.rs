//! Nova's `rescue_instance` and `unrescue_instance` for corral's
//! containers: the instance is powered off and booted from the rescue image
//! (the one asked for, else the image it was built from, as nova picks it)
//! with its own root at `/mnt`; an unrescue removes the rescue root and
//! boots the instance from its own again. The container work is the
//! driver's (`Driver::rescue`, `Driver::unrescue`).

use serde_json::{json, Value};

use super::{now_iso, stop_timeout, Inst, Manager};
use crate::compute::{spec, ComputeError};
use crate::driver::DriverError;
use crate::nova::objects::instance::{vm_states, Instance};
use crate::rpc::Context;

/// What `rescue_instance` was asked for.
pub(super) struct RescueArgs<'a> {
    /// `rescue_image_ref`.
    pub image: Option<&'a str>,
    /// `rescue_password`.
    pub password: Option<&'a str>,
    /// `clean_shutdown`.
    pub clean: bool,
}

/// `nova.utils.generate_password`: 12 characters (nova's
/// `password_length`) of its unambiguous default symbols.
fn generate_password() -> String {
    const SYMBOLS: &[u8] = b"23456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz";
    (0..12)
        .map(|_| SYMBOLS[rand::random::<u32>() as usize % SYMBOLS.len()] as char)
        .collect()
}

pub(super) const RESCUING: &str = "rescuing";
pub(super) const UNRESCUING: &str = "unrescuing";

/// `_get_rescue_image`: the image asked for, else the base image the
/// instance was built from, else its current image.
pub(super) fn rescue_image_ref(
    asked: Option<&str>,
    base_image_ref: Option<&str>,
    image_ref: Option<&str>,
) -> Option<String> {
    [asked, base_image_ref, image_ref]
        .into_iter()
        .flatten()
        .find(|s| !s.is_empty())
        .map(str::to_string)
}

impl Manager {
    /// `rescue_instance`. The rescue password (a generated one when none
    /// is given, as nova) goes where the libvirt driver puts it: into the
    /// rescue's own config drive (`admin_pass`), for an instance that has a
    /// config drive; nothing is injected into the rescue root.
    pub(super) async fn do_rescue(
        &self,
        ctx: &Context,
        inst: &mut Inst,
        instance: &Instance,
        args: RescueArgs<'_>,
    ) -> Result<(), ComputeError> {
        let RescueArgs {
            image: asked,
            password,
            clean,
        } = args;
        let uuid = inst.uuid.clone();
        let password = match password.filter(|p| !p.is_empty()) {
            Some(p) => p.to_string(),
            None => generate_password(),
        };
        let network_info = self.cached_nw_info(ctx, &uuid, instance).await;
        let (drive, _) = spec::guest_data(
            instance,
            &self.guest,
            &spec::GuestDataInputs {
                network_info,
                admin_pass: Some(&password),
                injected_files: &[],
                image_props: None,
            },
        )
        .map_err(|e| ComputeError::Invalid(e.to_string()))?;
        let meta = self.system_metadata(ctx, inst).await?;
        let image = rescue_image_ref(
            asked,
            meta.get("image_base_image_ref").and_then(Value::as_str),
            inst.str("image_ref"),
        )
        .ok_or_else(|| ComputeError::Invalid("no image to rescue from".into()))?;
        let alias = self.cache_image(ctx, &image).await?;
        let rescued = async {
            let timeout = stop_timeout(clean, self.cfg.shutdown_timeout);
            match self.driver.power_off(&uuid, timeout, !clean).await {
                Ok(()) | Err(DriverError::NotFound(_)) => {}
                Err(e) => return Err(e),
            }
            self.driver.rescue(&uuid, &alias, drive).await
        }
        .await;
        if let Err(e) = rescued {
            // _set_instance_obj_error_state, then InstanceNotRescuable
            let _ = self
                .save(ctx, inst, &[("vm_state", json!(vm_states::ERROR))], None)
                .await;
            return Err(ComputeError::NotRescuable {
                uuid,
                reason: format!("Driver Error: {e}"),
            });
        }
        let power = self.current_power(&uuid).await;
        self.save(
            ctx,
            inst,
            &[
                ("vm_state", json!(vm_states::RESCUED)),
                ("task_state", Value::Null),
                ("power_state", json!(power)),
                ("launched_at", json!(now_iso())),
            ],
            Some(json!(RESCUING)),
        )
        .await
    }

    /// `unrescue_instance`: a driver error puts the instance in ERROR
    /// (`_error_out_instance_on_exception`).
    pub(super) async fn do_unrescue(
        &self,
        ctx: &Context,
        inst: &mut Inst,
    ) -> Result<(), ComputeError> {
        if let Err(e) = self.driver.unrescue(&inst.uuid).await {
            self.to_error(ctx, inst).await;
            return Err(e.into());
        }
        let power = self.current_power(&inst.uuid).await;
        self.save(
            ctx,
            inst,
            &[
                ("vm_state", json!(vm_states::ACTIVE)),
                ("task_state", Value::Null),
                ("power_state", json!(power)),
            ],
            Some(json!(UNRESCUING)),
        )
        .await
    }

    /// What a restart found half-way through a rescue or an unrescue. The
    /// API sets `rescuing` and `unrescuing` before its cast, which may still
    /// be queued: while the driver shows no sign of the operation, the
    /// instance is left as nova-compute leaves it. A rescue the driver had
    /// begun is rolled back; an unrescue that had already removed the
    /// rescue is finished. Either way the instance then runs from its own
    /// root, ACTIVE. True when handled here.
    pub(super) async fn recover_rescue(&self, ctx: &Context, inst: &mut Inst) -> bool {
        let task = inst.str("task_state").map(str::to_string);
        let uuid = inst.uuid.clone();
        let rescued = self.driver.is_rescued(&uuid).await;
        match (task.as_deref(), rescued) {
            (Some(RESCUING), true) | (Some(UNRESCUING), false) => {}
            (Some(RESCUING | UNRESCUING), _) => return true,
            _ => return false,
        }
        tracing::warn!(%uuid, task = ?task, "rescue interrupted by a restart: instance back on its own root");
        match self.driver.unrescue(&uuid).await {
            Ok(()) | Err(DriverError::NotFound(_)) => {}
            Err(e) => {
                tracing::error!(%uuid, error = %e, "interrupted rescue not undone");
                self.to_error(ctx, inst).await;
                return true;
            }
        }
        let power = self.current_power(&uuid).await;
        let _ = self
            .save(
                ctx,
                inst,
                &[
                    ("vm_state", json!(vm_states::ACTIVE)),
                    ("task_state", Value::Null),
                    ("power_state", json!(power)),
                ],
                None,
            )
            .await;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_generated_password_is_twelve_unambiguous_characters() {
        let p = generate_password();
        assert_eq!(p.len(), 12);
        assert!(
            p.chars()
                .all(|c| c.is_ascii_alphanumeric() && !"01lIO".contains(c)),
            "{p}"
        );
        assert_ne!(p, generate_password());
    }

    #[test]
    fn the_rescue_image_is_picked_as_nova_picks_it() {
        assert_eq!(
            rescue_image_ref(Some("r"), Some("b"), Some("i")).as_deref(),
            Some("r")
        );
        assert_eq!(
            rescue_image_ref(None, Some("b"), Some("i")).as_deref(),
            Some("b")
        );
        assert_eq!(
            rescue_image_ref(Some(""), None, Some("i")).as_deref(),
            Some("i")
        );
        assert_eq!(rescue_image_ref(None, Some(""), None), None);
    }
}
