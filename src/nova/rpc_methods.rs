//! Typed RPC calls: compute RPC 6.x (`nova/compute/rpcapi.py` -> `ComputeManager`),
//! the conductor's object indirection API 3.0, the scheduler fanout/report calls 4.x and
//! the `baseapi` namespace; plus typed reply results.
//!
//! Decoding never fails because a method is unknown: anything without a typed struct
//! becomes [`RpcCall::Other`] (method, target guess and raw args). A *known* method whose
//! arguments do not decode (a required argument missing, wrong type) is an error, as the
//! Python endpoint would raise `TypeError`. Arguments nova 34 does not send, but a newer
//! nova might, land in each struct's `extra` and are written back.
//!
//! Argument structs declare fields in the order nova's rpcapi builds the kwargs, so an
//! encoded call lists them as nova does.
//!
//! Long because it is a table: one argument struct per compute RPC 6.x method,
//! kept in one file so that it reads against nova's `compute/rpcapi.py`.

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{Map, Value};

use super::envelope::RpcRequest;
use super::fields::Field;
use super::object::{NovaObject, ObjectError};
use super::objects::{
    manifest, BlockDeviceMapping, BlockDeviceMappingList, Instance, InstanceExternalEvent,
    Migration, NetworkRequestList, RequestSpec, Selection,
};

/// Errors of typed call decoding and encoding.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// A typed method's arguments do not decode.
    #[error("invalid arguments for {method}")]
    InvalidArgs {
        /// Method.
        method: String,
        /// Why.
        #[source]
        source: serde_json::Error,
    },
    /// A reply result does not have the shape the request implies.
    #[error("invalid result of {method}")]
    InvalidResult {
        /// Method replied to.
        method: String,
        /// Why.
        #[source]
        source: serde_json::Error,
    },
    /// Encoding typed arguments failed.
    #[error("cannot encode arguments of {method}")]
    Encode {
        /// Method.
        method: String,
        /// Why.
        #[source]
        source: serde_json::Error,
    },
    /// An object inside the call is not valid.
    #[error(transparent)]
    Object(#[from] ObjectError),
}

/// Which server an RPC request is addressed to, guessed from namespace, method and
/// version (the routing key is not part of the body).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RpcTarget {
    /// `ComputeManager` (topics `compute`, `compute-alt`), version 6.x.
    Compute,
    /// `ConductorManager`, topic `conductor`, version 3.x, object indirection.
    Conductor,
    /// `ComputeTaskManager`, namespace `compute_task`.
    ComputeTask,
    /// `SchedulerManager`, topic `scheduler` / fanout `scheduler_fanout`, 4.x.
    Scheduler,
    /// `BaseRPCAPI`, namespace `baseapi` (`ping`).
    BaseApi,
    /// Not recognised.
    Unknown,
}

/// A decoded request.
#[derive(Clone, Debug, PartialEq)]
pub enum RpcCall {
    /// Compute RPC 6.x.
    Compute(ComputeCall),
    /// Conductor object indirection.
    Conductor(ConductorCall),
    /// Scheduler calls and fanout casts.
    Scheduler(SchedulerCall),
    /// `baseapi` namespace.
    BaseApi(BaseApiCall),
    /// Any other method: not typed, arguments kept as received.
    Other(GenericCall),
}

/// An untyped call.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct GenericCall {
    /// Best guess of the server.
    pub target: RpcTarget,
    /// Method.
    pub method: String,
    /// Arguments as received.
    pub args: Map<String, Value>,
}

impl RpcCall {
    /// Decodes `req`'s arguments into the typed call for its method.
    pub fn decode(req: &RpcRequest) -> Result<RpcCall, CallError> {
        let method = req.method.as_str();
        let version = req.api_version().ok();
        let major = version.map(|v| v.major);
        let other = |target| {
            Ok(RpcCall::Other(GenericCall {
                target,
                method: method.to_string(),
                args: req.args.clone(),
            }))
        };
        match req.namespace.as_str() {
            Some("baseapi") => match BaseApiCall::decode(method, &req.args) {
                Some(call) => call.map(RpcCall::BaseApi),
                None => other(RpcTarget::BaseApi),
            },
            Some("compute_task") => other(RpcTarget::ComputeTask),
            Some(_) => other(RpcTarget::Unknown),
            None => {
                // Method names do not collide across these servers in nova 34; the
                // version's major must also match the server's API.
                if ConductorCall::METHODS.contains(&method) && major == Some(3) {
                    if let Some(call) = ConductorCall::decode(method, &req.args) {
                        return call.map(RpcCall::Conductor);
                    }
                }
                if SchedulerCall::METHODS.contains(&method) && major == Some(4) {
                    if let Some(call) = SchedulerCall::decode(method, &req.args) {
                        return call.map(RpcCall::Scheduler);
                    }
                }
                if ComputeCall::METHODS.contains(&method) && major == Some(6) {
                    if let Some(call) = ComputeCall::decode(method, &req.args) {
                        return call.map(RpcCall::Compute);
                    }
                }
                let target = if ConductorCall::METHODS.contains(&method) {
                    RpcTarget::Conductor
                } else if SchedulerCall::METHODS.contains(&method) {
                    RpcTarget::Scheduler
                } else if ComputeCall::METHODS.contains(&method) {
                    RpcTarget::Compute
                } else {
                    RpcTarget::Unknown
                };
                other(target)
            }
        }
    }

    /// The method name.
    pub fn method(&self) -> &str {
        match self {
            RpcCall::Compute(c) => c.method(),
            RpcCall::Conductor(c) => c.method(),
            RpcCall::Scheduler(c) => c.method(),
            RpcCall::BaseApi(c) => c.method(),
            RpcCall::Other(g) => &g.method,
        }
    }

    /// The server it is for.
    pub fn target(&self) -> RpcTarget {
        match self {
            RpcCall::Compute(_) => RpcTarget::Compute,
            RpcCall::Conductor(_) => RpcTarget::Conductor,
            RpcCall::Scheduler(_) => RpcTarget::Scheduler,
            RpcCall::BaseApi(_) => RpcTarget::BaseApi,
            RpcCall::Other(g) => g.target,
        }
    }

    /// True when the arguments were decoded into a typed struct.
    pub fn is_typed(&self) -> bool {
        !matches!(self, RpcCall::Other(_))
    }

    /// The arguments, encoded back to the wire form.
    pub fn to_args(&self) -> Result<Map<String, Value>, CallError> {
        match self {
            RpcCall::Compute(c) => c.to_args(),
            RpcCall::Conductor(c) => c.to_args(),
            RpcCall::Scheduler(c) => c.to_args(),
            RpcCall::BaseApi(c) => c.to_args(),
            RpcCall::Other(g) => Ok(g.args.clone()),
        }
    }

    /// The instance uuid the call is about, for log spans.
    pub fn instance_uuid(&self) -> Option<String> {
        match self {
            RpcCall::Compute(c) => c.instance().and_then(|i| i.uuid().map(str::to_string)),
            RpcCall::Conductor(ConductorCall::ObjectAction(a)) => {
                if a.objinst.name == "Instance" {
                    a.objinst
                        .get("uuid")
                        .and_then(Value::as_str)
                        .map(str::to_string)
                } else {
                    a.objinst
                        .get("instance_uuid")
                        .and_then(Value::as_str)
                        .map(str::to_string)
                }
            }
            _ => None,
        }
    }
}

fn decode_args<T: serde::de::DeserializeOwned>(
    method: &str,
    args: &Map<String, Value>,
) -> Result<T, CallError> {
    serde_json::from_value(Value::Object(args.clone())).map_err(|source| CallError::InvalidArgs {
        method: method.to_string(),
        source,
    })
}

fn encode_args<T: Serialize>(method: &str, args: &T) -> Result<Map<String, Value>, CallError> {
    let encode_err = |source| CallError::Encode {
        method: method.to_string(),
        source,
    };
    match serde_json::to_value(args).map_err(encode_err)? {
        Value::Object(m) => Ok(m),
        _ => Ok(Map::new()),
    }
}

/// Serde helper: a nullable argument that must be present (the Python endpoint has no
/// default for it).
fn required<'de, D, T>(deserializer: D) -> Result<Field<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    Field::deserialize(deserializer)
}

macro_rules! rpc_enum {
    (
        $(#[$meta:meta])*
        pub enum $enum:ident {
            $( $(#[$vmeta:meta])* $method:literal => $variant:ident($args:ty) ),* $(,)?
        }
    ) => {
        $(#[$meta])*
        #[derive(Clone, Debug, PartialEq)]
        pub enum $enum {
            $( $(#[$vmeta])* $variant(Box<$args>), )*
        }

        impl $enum {
            /// Methods with a typed variant.
            pub const METHODS: &'static [&'static str] = &[$($method),*];

            /// The method name.
            pub fn method(&self) -> &'static str {
                match self {
                    $( Self::$variant(_) => $method, )*
                }
            }

            /// Decodes `args` for `method`; `None` when the method has no variant.
            pub fn decode(method: &str, args: &Map<String, Value>) -> Option<Result<Self, CallError>> {
                match method {
                    $( $method => Some(decode_args::<$args>(method, args).map(|a| Self::$variant(Box::new(a)))), )*
                    _ => None,
                }
            }

            /// Arguments in wire form.
            pub fn to_args(&self) -> Result<Map<String, Value>, CallError> {
                match self {
                    $( Self::$variant(a) => encode_args($method, a.as_ref()), )*
                }
            }
        }
    };
}

rpc_enum! {
    /// Compute RPC 6.x calls a container compute handles or must answer.
    pub enum ComputeCall {
        /// Cast: create and start a server.
        "build_and_run_instance" => BuildAndRunInstance(BuildAndRunInstance),
        /// Cast: delete a server.
        "terminate_instance" => TerminateInstance(TerminateInstance),
        /// Cast (call when the API asks): power off.
        "stop_instance" => StopInstance(StopInstance),
        /// Cast: power on.
        "start_instance" => StartInstance(InstanceArgs),
        /// Cast: reboot (SOFT/HARD).
        "reboot_instance" => RebootInstance(RebootInstance),
        /// Cast: freeze.
        "pause_instance" => PauseInstance(InstanceArgs),
        /// Cast: thaw.
        "unpause_instance" => UnpauseInstance(InstanceArgs),
        /// Cast: suspend.
        "suspend_instance" => SuspendInstance(InstanceArgs),
        /// Cast: resume.
        "resume_instance" => ResumeInstance(InstanceArgs),
        /// Call: console log text.
        "get_console_output" => GetConsoleOutput(GetConsoleOutput),
        /// Call: legacy diagnostics dict.
        "get_diagnostics" => GetDiagnostics(InstanceArgs),
        /// Call: `Diagnostics` object.
        "get_instance_diagnostics" => GetInstanceDiagnostics(InstanceArgs),
        /// Cast (6.2): rebuild or evacuate.
        "rebuild_instance" => RebuildInstance(RebuildInstance),
        /// Cast on `compute-alt`: Neutron/Cinder events.
        "external_instance_event" => ExternalInstanceEvent(ExternalInstanceEvent),
        /// Cast: snapshot to an existing Glance image.
        "snapshot_instance" => SnapshotInstance(SnapshotInstance),
        /// Cast: snapshot and rotate backups.
        "backup_instance" => BackupInstance(BackupInstance),
        /// Cast: rescue.
        "rescue_instance" => RescueInstance(RescueInstance),
        /// Cast: unrescue.
        "unrescue_instance" => UnrescueInstance(InstanceArgs),
        /// Call: set the admin password.
        "set_admin_password" => SetAdminPassword(SetAdminPassword),
        /// Cast: crash dump.
        "trigger_crash_dump" => TriggerCrashDump(InstanceArgs),
        /// Cast: shelve.
        "shelve_instance" => ShelveInstance(ShelveInstance),
        /// Cast: offload a shelved server.
        "shelve_offload_instance" => ShelveOffloadInstance(ShelveOffloadInstance),
        /// Cast: unshelve onto this host.
        "unshelve_instance" => UnshelveInstance(UnshelveInstance),
        /// Cast: deferred delete.
        "soft_delete_instance" => SoftDeleteInstance(InstanceArgs),
        /// Cast: undo a soft delete.
        "restore_instance" => RestoreInstance(InstanceArgs),
        /// Cast: re-inject network info.
        "inject_network_info" => InjectNetworkInfo(InstanceArgs),
        /// Call: hot-plug a port; returns the VIF.
        "attach_interface" => AttachInterface(AttachInterface),
        /// Cast: hot-unplug a port.
        "detach_interface" => DetachInterface(DetachInterface),
        /// Call (long): create the BDM of a volume attach.
        "reserve_block_device_name" => ReserveBlockDeviceName(ReserveBlockDeviceName),
        /// Cast: attach a volume.
        "attach_volume" => AttachVolume(AttachVolume),
        /// Cast: detach a volume.
        "detach_volume" => DetachVolume(DetachVolume),
        /// Call: VNC console connect info.
        "get_vnc_console" => GetVncConsole(GetConsole),
        /// Call: SPICE console connect info.
        "get_spice_console" => GetSpiceConsole(GetConsole),
        /// Call: serial console connect info.
        "get_serial_console" => GetSerialConsole(GetConsole),
        /// Call: MKS console connect info.
        "get_mks_console" => GetMksConsole(GetConsole),
        /// Call on `compute-alt`: check a console port.
        "validate_console_port" => ValidateConsolePort(ValidateConsolePort),
        /// Call: host uptime string.
        "get_host_uptime" => GetHostUptime(NoArgs),
        /// Call (5.4, long): pre-cache Glance images (aggregate image caching).
        "cache_images" => CacheImages(CacheImages),
    }
}

impl ComputeCall {
    /// The instance the call is about (the first for `external_instance_event`).
    pub fn instance(&self) -> Option<&Instance> {
        use ComputeCall as C;
        Some(match self {
            C::BuildAndRunInstance(a) => &a.instance,
            C::TerminateInstance(a) => &a.instance,
            C::StopInstance(a) => &a.instance,
            C::RebootInstance(a) => &a.instance,
            C::StartInstance(a)
            | C::PauseInstance(a)
            | C::UnpauseInstance(a)
            | C::SuspendInstance(a)
            | C::ResumeInstance(a)
            | C::GetDiagnostics(a)
            | C::GetInstanceDiagnostics(a)
            | C::UnrescueInstance(a)
            | C::TriggerCrashDump(a)
            | C::SoftDeleteInstance(a)
            | C::RestoreInstance(a)
            | C::InjectNetworkInfo(a) => &a.instance,
            C::GetConsoleOutput(a) => &a.instance,
            C::RebuildInstance(a) => &a.instance,
            C::ExternalInstanceEvent(a) => a.instances.first()?,
            C::SnapshotInstance(a) => &a.instance,
            C::BackupInstance(a) => &a.instance,
            C::RescueInstance(a) => &a.instance,
            C::SetAdminPassword(a) => &a.instance,
            C::ShelveInstance(a) => &a.instance,
            C::ShelveOffloadInstance(a) => &a.instance,
            C::UnshelveInstance(a) => &a.instance,
            C::AttachInterface(a) => &a.instance,
            C::DetachInterface(a) => &a.instance,
            C::ReserveBlockDeviceName(a) => &a.instance,
            C::AttachVolume(a) => &a.instance,
            C::DetachVolume(a) => &a.instance,
            C::GetVncConsole(a)
            | C::GetSpiceConsole(a)
            | C::GetSerialConsole(a)
            | C::GetMksConsole(a) => &a.instance,
            C::ValidateConsolePort(a) => &a.instance,
            C::GetHostUptime(_) | C::CacheImages(_) => return None,
        })
    }
}

/// Arguments of methods that take only `instance`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct InstanceArgs {
    /// The instance.
    pub instance: Instance,
    /// Unknown arguments, kept.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// No arguments.
#[derive(Clone, Debug, PartialEq, Default, Serialize, Deserialize)]
pub struct NoArgs {
    /// Unknown arguments, kept.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// `build_and_run_instance` (sent by the conductor after scheduling).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BuildAndRunInstance {
    /// Instance (vm_state `building`, task_state `scheduling`).
    pub instance: Instance,
    /// The Glance image as a plain dict (`created_at` in `PERFECT_TIME_FORMAT`).
    #[serde(deserialize_with = "required", skip_serializing_if = "Field::is_unset")]
    pub image: Field<Map<String, Value>>,
    /// Scheduler request.
    #[serde(deserialize_with = "required", skip_serializing_if = "Field::is_unset")]
    pub request_spec: Field<RequestSpec>,
    /// Legacy dict (`retry`, `limits`, ...).
    #[serde(deserialize_with = "required", skip_serializing_if = "Field::is_unset")]
    pub filter_properties: Field<Map<String, Value>>,
    /// Admin password to inject.
    #[serde(default, skip_serializing_if = "Field::is_unset")]
    pub admin_password: Field<String>,
    /// `[[path, contents], ...]`.
    #[serde(default, skip_serializing_if = "Field::is_unset")]
    pub injected_files: Field<Vec<Value>>,
    /// Networks or ports; `network_id: "none"` for none.
    #[serde(default, skip_serializing_if = "Field::is_unset")]
    pub requested_networks: Field<NetworkRequestList>,
    /// Security group names.
    #[serde(default, skip_serializing_if = "Field::is_unset")]
    pub security_groups: Field<Vec<String>>,
    /// Block devices.
    #[serde(default, skip_serializing_if = "Field::is_unset")]
    pub block_device_mapping: Field<BlockDeviceMappingList>,
    /// Node name chosen by the scheduler.
    #[serde(default, skip_serializing_if = "Field::is_unset")]
    pub node: Field<String>,
    /// `SchedulerLimits.to_dict()`.
    #[serde(default, skip_serializing_if = "Field::is_unset")]
    pub limits: Field<Map<String, Value>>,
    /// Alternate hosts for a reschedule (empty when forced).
    #[serde(default, skip_serializing_if = "Field::is_unset")]
    pub host_list: Field<Vec<Selection>>,
    /// Cyborg accelerator request uuids.
    #[serde(deserialize_with = "required", skip_serializing_if = "Field::is_unset")]
    pub accel_uuids: Field<Vec<String>>,
    /// Unknown arguments, kept.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// `terminate_instance`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TerminateInstance {
    /// Instance (task_state `deleting`).
    pub instance: Instance,
    /// Its block devices.
    #[serde(deserialize_with = "required", skip_serializing_if = "Field::is_unset")]
    pub bdms: Field<BlockDeviceMappingList>,
    /// Unknown arguments, kept.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// `stop_instance`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StopInstance {
    /// Instance (task_state `powering-off`).
    pub instance: Instance,
    /// Ask the guest to shut down before powering off.
    #[serde(deserialize_with = "required", skip_serializing_if = "Field::is_unset")]
    pub clean_shutdown: Field<bool>,
    /// Unknown arguments, kept.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// `reboot_instance`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RebootInstance {
    /// Instance (task_state `rebooting` / `rebooting_hard`).
    pub instance: Instance,
    /// Always null from nova-api.
    #[serde(deserialize_with = "required", skip_serializing_if = "Field::is_unset")]
    pub block_device_info: Field<Value>,
    /// `SOFT` or `HARD`.
    #[serde(deserialize_with = "required", skip_serializing_if = "Field::is_unset")]
    pub reboot_type: Field<String>,
    /// Unknown arguments, kept.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl RebootInstance {
    /// True for a hard reboot.
    pub fn is_hard(&self) -> bool {
        self.reboot_type.as_str() == Some("HARD")
    }
}

/// `cache_images`: the Glance images an aggregate's hosts should hold.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CacheImages {
    /// Glance image ids.
    pub image_ids: Vec<String>,
    /// Unknown arguments, kept.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// `get_console_output`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GetConsoleOutput {
    /// Instance.
    pub instance: Instance,
    /// Last N lines, or null for all.
    #[serde(deserialize_with = "required", skip_serializing_if = "Field::is_unset")]
    pub tail_length: Field<i64>,
    /// Unknown arguments, kept.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// `rebuild_instance` (6.2 adds `target_state`, 6.1 `reimage_boot_volume`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RebuildInstance {
    /// Instance (task_state `rebuilding`).
    pub instance: Instance,
    /// New admin password.
    #[serde(deserialize_with = "required", skip_serializing_if = "Field::is_unset")]
    pub new_pass: Field<String>,
    /// Files to inject.
    #[serde(deserialize_with = "required", skip_serializing_if = "Field::is_unset")]
    pub injected_files: Field<Vec<Value>>,
    /// New image id.
    #[serde(deserialize_with = "required", skip_serializing_if = "Field::is_unset")]
    pub image_ref: Field<String>,
    /// Previous image id.
    #[serde(deserialize_with = "required", skip_serializing_if = "Field::is_unset")]
    pub orig_image_ref: Field<String>,
    /// System metadata before the rebuild.
    #[serde(deserialize_with = "required", skip_serializing_if = "Field::is_unset")]
    pub orig_sys_metadata: Field<Map<String, Value>>,
    /// Block devices.
    #[serde(deserialize_with = "required", skip_serializing_if = "Field::is_unset")]
    pub bdms: Field<BlockDeviceMappingList>,
    /// True for an evacuation onto this host.
    #[serde(deserialize_with = "required", skip_serializing_if = "Field::is_unset")]
    pub recreate: Field<bool>,
    /// Evacuation: shared storage.
    #[serde(deserialize_with = "required", skip_serializing_if = "Field::is_unset")]
    pub on_shared_storage: Field<bool>,
    /// Keep the ephemeral disk.
    #[serde(deserialize_with = "required", skip_serializing_if = "Field::is_unset")]
    pub preserve_ephemeral: Field<bool>,
    /// Evacuation migration record.
    #[serde(deserialize_with = "required", skip_serializing_if = "Field::is_unset")]
    pub migration: Field<Migration>,
    /// Evacuation target node.
    #[serde(deserialize_with = "required", skip_serializing_if = "Field::is_unset")]
    pub scheduled_node: Field<String>,
    /// Scheduler limits dict.
    #[serde(deserialize_with = "required", skip_serializing_if = "Field::is_unset")]
    pub limits: Field<Map<String, Value>>,
    /// Scheduler request.
    #[serde(deserialize_with = "required", skip_serializing_if = "Field::is_unset")]
    pub request_spec: Field<RequestSpec>,
    /// Accelerators.
    #[serde(deserialize_with = "required", skip_serializing_if = "Field::is_unset")]
    pub accel_uuids: Field<Vec<String>>,
    /// 6.1: rebuild a volume-backed server.
    #[serde(default, skip_serializing_if = "Field::is_unset")]
    pub reimage_boot_volume: Field<bool>,
    /// 6.2: state after the rebuild (`stopped` or null).
    #[serde(default, skip_serializing_if = "Field::is_unset")]
    pub target_state: Field<String>,
    /// Unknown arguments, kept.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// `external_instance_event`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ExternalInstanceEvent {
    /// Instances on this host the events are for.
    pub instances: Vec<Instance>,
    /// Events (`network-vif-plugged`, `power-update`, ...).
    pub events: Vec<InstanceExternalEvent>,
    /// Unknown arguments, kept.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// `snapshot_instance`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SnapshotInstance {
    /// Instance (task_state `image_snapshot_pending`).
    pub instance: Instance,
    /// Glance image already created by nova-api.
    #[serde(deserialize_with = "required", skip_serializing_if = "Field::is_unset")]
    pub image_id: Field<String>,
    /// Unknown arguments, kept.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// `backup_instance`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BackupInstance {
    /// Instance.
    pub instance: Instance,
    /// Glance image already created.
    #[serde(deserialize_with = "required", skip_serializing_if = "Field::is_unset")]
    pub image_id: Field<String>,
    /// `daily`, `weekly`.
    #[serde(deserialize_with = "required", skip_serializing_if = "Field::is_unset")]
    pub backup_type: Field<String>,
    /// Backups to keep.
    #[serde(deserialize_with = "required", skip_serializing_if = "Field::is_unset")]
    pub rotation: Field<i64>,
    /// Unknown arguments, kept.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// `rescue_instance` (nova sends the instance last).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RescueInstance {
    /// Password for the rescue image.
    #[serde(deserialize_with = "required", skip_serializing_if = "Field::is_unset")]
    pub rescue_password: Field<String>,
    /// Shut the guest down cleanly first.
    #[serde(deserialize_with = "required", skip_serializing_if = "Field::is_unset")]
    pub clean_shutdown: Field<bool>,
    /// Rescue image, or null for the instance's own.
    #[serde(deserialize_with = "required", skip_serializing_if = "Field::is_unset")]
    pub rescue_image_ref: Field<String>,
    /// Instance.
    pub instance: Instance,
    /// Unknown arguments, kept.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// `set_admin_password`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SetAdminPassword {
    /// Instance.
    pub instance: Instance,
    /// The password.
    #[serde(deserialize_with = "required", skip_serializing_if = "Field::is_unset")]
    pub new_pass: Field<String>,
    /// Unknown arguments, kept.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// `shelve_instance`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ShelveInstance {
    /// Instance.
    pub instance: Instance,
    /// Snapshot image id.
    #[serde(deserialize_with = "required", skip_serializing_if = "Field::is_unset")]
    pub image_id: Field<String>,
    /// Clean shutdown first.
    #[serde(deserialize_with = "required", skip_serializing_if = "Field::is_unset")]
    pub clean_shutdown: Field<bool>,
    /// Accelerators.
    #[serde(deserialize_with = "required", skip_serializing_if = "Field::is_unset")]
    pub accel_uuids: Field<Vec<String>>,
    /// Unknown arguments, kept.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// `shelve_offload_instance`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ShelveOffloadInstance {
    /// Instance.
    pub instance: Instance,
    /// Clean shutdown first.
    #[serde(deserialize_with = "required", skip_serializing_if = "Field::is_unset")]
    pub clean_shutdown: Field<bool>,
    /// Accelerators.
    #[serde(deserialize_with = "required", skip_serializing_if = "Field::is_unset")]
    pub accel_uuids: Field<Vec<String>>,
    /// Unknown arguments, kept.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// `unshelve_instance`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct UnshelveInstance {
    /// Instance.
    pub instance: Instance,
    /// Shelved image as a dict.
    #[serde(deserialize_with = "required", skip_serializing_if = "Field::is_unset")]
    pub image: Field<Map<String, Value>>,
    /// Legacy filter properties.
    #[serde(deserialize_with = "required", skip_serializing_if = "Field::is_unset")]
    pub filter_properties: Field<Map<String, Value>>,
    /// Node chosen by the scheduler.
    #[serde(deserialize_with = "required", skip_serializing_if = "Field::is_unset")]
    pub node: Field<String>,
    /// Scheduler request.
    #[serde(deserialize_with = "required", skip_serializing_if = "Field::is_unset")]
    pub request_spec: Field<RequestSpec>,
    /// Accelerators.
    #[serde(deserialize_with = "required", skip_serializing_if = "Field::is_unset")]
    pub accel_uuids: Field<Vec<String>>,
    /// Unknown arguments, kept.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// `attach_interface`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AttachInterface {
    /// Instance.
    pub instance: Instance,
    /// Network to create a port on.
    #[serde(deserialize_with = "required", skip_serializing_if = "Field::is_unset")]
    pub network_id: Field<String>,
    /// Existing port.
    #[serde(deserialize_with = "required", skip_serializing_if = "Field::is_unset")]
    pub port_id: Field<String>,
    /// Fixed IP wanted.
    #[serde(deserialize_with = "required", skip_serializing_if = "Field::is_unset")]
    pub requested_ip: Field<String>,
    /// Device tag.
    #[serde(deserialize_with = "required", skip_serializing_if = "Field::is_unset")]
    pub tag: Field<String>,
    /// Unknown arguments, kept.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// `detach_interface`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DetachInterface {
    /// Instance.
    pub instance: Instance,
    /// Port to remove.
    #[serde(deserialize_with = "required", skip_serializing_if = "Field::is_unset")]
    pub port_id: Field<String>,
    /// Unknown arguments, kept.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// `reserve_block_device_name`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ReserveBlockDeviceName {
    /// Instance.
    pub instance: Instance,
    /// Requested device name, or null.
    #[serde(deserialize_with = "required", skip_serializing_if = "Field::is_unset")]
    pub device: Field<String>,
    /// Volume.
    #[serde(deserialize_with = "required", skip_serializing_if = "Field::is_unset")]
    pub volume_id: Field<String>,
    /// Bus.
    #[serde(deserialize_with = "required", skip_serializing_if = "Field::is_unset")]
    pub disk_bus: Field<String>,
    /// Device type.
    #[serde(deserialize_with = "required", skip_serializing_if = "Field::is_unset")]
    pub device_type: Field<String>,
    /// Device tag.
    #[serde(deserialize_with = "required", skip_serializing_if = "Field::is_unset")]
    pub tag: Field<String>,
    /// Multi-attach volume.
    #[serde(deserialize_with = "required", skip_serializing_if = "Field::is_unset")]
    pub multiattach: Field<bool>,
    /// Unknown arguments, kept.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// `attach_volume`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AttachVolume {
    /// Instance.
    pub instance: Instance,
    /// The mapping created by `reserve_block_device_name`.
    #[serde(deserialize_with = "required", skip_serializing_if = "Field::is_unset")]
    pub bdm: Field<BlockDeviceMapping>,
    /// Unknown arguments, kept.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// `detach_volume`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DetachVolume {
    /// Instance.
    pub instance: Instance,
    /// Volume.
    #[serde(deserialize_with = "required", skip_serializing_if = "Field::is_unset")]
    pub volume_id: Field<String>,
    /// Cinder attachment.
    #[serde(deserialize_with = "required", skip_serializing_if = "Field::is_unset")]
    pub attachment_id: Field<String>,
    /// Unknown arguments, kept.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// `get_{vnc,spice,serial,mks}_console`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GetConsole {
    /// Instance.
    pub instance: Instance,
    /// `novnc`, `spice-html5`, `serial`, `webmks`, ...
    #[serde(deserialize_with = "required", skip_serializing_if = "Field::is_unset")]
    pub console_type: Field<String>,
    /// Unknown arguments, kept.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// `validate_console_port`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ValidateConsolePort {
    /// Instance.
    pub instance: Instance,
    /// Port (string or integer from nova).
    #[serde(deserialize_with = "required", skip_serializing_if = "Field::is_unset")]
    pub port: Field<Value>,
    /// Console type.
    #[serde(deserialize_with = "required", skip_serializing_if = "Field::is_unset")]
    pub console_type: Field<String>,
    /// Unknown arguments, kept.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

rpc_enum! {
    /// Conductor object indirection (version 3.0): how a compute reads and writes
    /// versioned objects without a database.
    pub enum ConductorCall {
        /// Call a class method (`get_by_uuid`, `event_start`, ...).
        "object_class_action_versions" => ObjectClassActionVersions(ObjectClassActionVersions),
        /// Call an instance method (`save`, `create`, `destroy`, `refresh`, ...).
        "object_action" => ObjectAction(ObjectAction),
        /// Ask for an object to be backported to the manifest's versions.
        "object_backport_versions" => ObjectBackportVersions(ObjectBackportVersions),
    }
}

/// `object_class_action_versions`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ObjectClassActionVersions {
    /// Object class, e.g. `Service`.
    pub objname: String,
    /// Class method, e.g. `get_by_host_and_binary`.
    pub objmethod: String,
    /// The caller's manifest (`obj_tree_get_versions(objname)`), wire order kept.
    pub object_versions: Map<String, Value>,
    /// Positional args after the context.
    pub args: Vec<Value>,
    /// Keyword args.
    pub kwargs: Map<String, Value>,
    /// Unknown arguments, kept.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl ObjectClassActionVersions {
    /// A call with nova 34's manifest for `objname`.
    pub fn new(
        objname: &str,
        objmethod: &str,
        args: Vec<Value>,
        kwargs: Map<String, Value>,
    ) -> Result<Self, ObjectError> {
        let object_versions = manifest::object_versions_arg(objname)
            .ok_or_else(|| ObjectError::UnknownObject(objname.to_string()))?;
        Ok(Self {
            objname: objname.to_string(),
            objmethod: objmethod.to_string(),
            object_versions,
            args,
            kwargs,
            extra: Map::new(),
        })
    }

    /// `InstanceActionEvent.event_start(instance_uuid, event_name, want_result=False,
    /// host=host)`, as `wrap_instance_event` sends it (event `compute_<method>`).
    pub fn event_start(instance_uuid: &str, event: &str, host: &str) -> Result<Self, ObjectError> {
        let mut kwargs = Map::new();
        kwargs.insert("want_result".into(), Value::Bool(false));
        kwargs.insert("host".into(), Value::String(host.to_string()));
        Self::new(
            "InstanceActionEvent",
            "event_start",
            vec![instance_uuid.into(), event.into()],
            kwargs,
        )
    }

    /// `InstanceActionEvent.event_finish_with_failure(...)`: nova's only "finish"; null
    /// `exc_val`/`exc_tb` mean success.
    pub fn event_finish(
        instance_uuid: &str,
        event: &str,
        exc_val: Option<&str>,
        exc_tb: Option<&str>,
    ) -> Result<Self, ObjectError> {
        let opt = |s: Option<&str>| s.map_or(Value::Null, |s| Value::String(s.to_string()));
        let mut kwargs = Map::new();
        kwargs.insert("exc_val".into(), opt(exc_val));
        kwargs.insert("exc_tb".into(), opt(exc_tb));
        kwargs.insert("want_result".into(), Value::Bool(false));
        Self::new(
            "InstanceActionEvent",
            "event_finish_with_failure",
            vec![instance_uuid.into(), event.into()],
            kwargs,
        )
    }
}

/// `object_action`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ObjectAction {
    /// The object, with `nova_object.changes` listing what to persist.
    pub objinst: NovaObject,
    /// Method, e.g. `save`.
    pub objmethod: String,
    /// Positional args.
    pub args: Vec<Value>,
    /// Keyword args, e.g. `expected_task_state`.
    pub kwargs: Map<String, Value>,
    /// Unknown arguments, kept.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl ObjectAction {
    /// `objinst.<objmethod>(*args, **kwargs)` on the conductor.
    pub fn new(
        objinst: NovaObject,
        objmethod: &str,
        args: Vec<Value>,
        kwargs: Map<String, Value>,
    ) -> Self {
        Self {
            objinst,
            objmethod: objmethod.to_string(),
            args,
            kwargs,
            extra: Map::new(),
        }
    }
}

/// `object_backport_versions`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ObjectBackportVersions {
    /// The object received at a version this side does not implement.
    pub objinst: NovaObject,
    /// This side's manifest.
    pub object_versions: Map<String, Value>,
    /// Unknown arguments, kept.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

rpc_enum! {
    /// Scheduler RPC 4.x seen from computes and the conductor.
    pub enum SchedulerCall {
        /// Call from the conductor.
        "select_destinations" => SelectDestinations(SelectDestinations),
        /// Fanout cast from a compute after a build.
        "update_instance_info" => UpdateInstanceInfo(UpdateInstanceInfo),
        /// Fanout cast from a compute after a delete.
        "delete_instance_info" => DeleteInstanceInfo(DeleteInstanceInfo),
        /// Fanout cast from a compute's periodic sync.
        "sync_instance_info" => SyncInstanceInfo(SyncInstanceInfo),
    }
}

/// `select_destinations`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SelectDestinations {
    /// Instances to place.
    #[serde(default, skip_serializing_if = "Field::is_unset")]
    pub instance_uuids: Field<Vec<String>>,
    /// The request.
    #[serde(default, skip_serializing_if = "Field::is_unset")]
    pub spec_obj: Field<RequestSpec>,
    /// Return `Selection` objects.
    #[serde(default, skip_serializing_if = "Field::is_unset")]
    pub return_objects: Field<bool>,
    /// Return alternates.
    #[serde(default, skip_serializing_if = "Field::is_unset")]
    pub return_alternates: Field<bool>,
    /// Unknown arguments, kept.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// `update_instance_info`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct UpdateInstanceInfo {
    /// Compute host.
    pub host_name: String,
    /// An `Instance` or an `InstanceList`.
    pub instance_info: NovaObject,
    /// Unknown arguments, kept.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// `delete_instance_info`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DeleteInstanceInfo {
    /// Compute host.
    pub host_name: String,
    /// Deleted instance.
    pub instance_uuid: String,
    /// Unknown arguments, kept.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// `sync_instance_info`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SyncInstanceInfo {
    /// Compute host.
    pub host_name: String,
    /// All instances on the host.
    pub instance_uuids: Vec<String>,
    /// Unknown arguments, kept.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

rpc_enum! {
    /// `baseapi` namespace (`nova/baserpc.py`), on every nova service.
    pub enum BaseApiCall {
        /// Readiness ping: `{"service": <name>, "arg": arg}`.
        "ping" => Ping(Ping),
        /// eventlet backdoor port.
        "get_backdoor_port" => GetBackdoorPort(NoArgs),
    }
}

/// `ping`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Ping {
    /// Echoed back; nova sends `"1.21 GigaWatts"`.
    pub arg: Value,
    /// Unknown arguments, kept.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// A reply's result interpreted through the request it answers.
#[derive(Clone, Debug, PartialEq)]
pub enum ReplyResult {
    /// Null (casts-like calls, `event_start`, heartbeats, failures).
    None,
    /// `object_action`: `[updates, return_value]`.
    ObjectAction(ObjectActionResult),
    /// A versioned object (class action results, `get_instance_diagnostics`, ...).
    Object(NovaObject),
    /// `select_destinations` with `return_objects`: one list of selections per instance.
    Selections(Vec<Vec<Selection>>),
    /// Anything else (strings, dicts, lists).
    Value(Value),
}

/// The result of `object_action`.
#[derive(Clone, Debug, PartialEq)]
pub struct ObjectActionResult {
    /// Field -> primitive for every field the conductor changed, plus
    /// `obj_what_changed` (list); wire order kept.
    pub updates: Map<String, Value>,
    /// The method's return value.
    pub result: Value,
}

impl ObjectActionResult {
    /// Fields the object should consider dirty afterwards.
    pub fn what_changed(&self) -> Vec<String> {
        self.updates
            .get("obj_what_changed")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(Value::as_str)
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default()
    }

    /// What the `remotable` wrapper does with a reply: set every updated field, then make
    /// the changes exactly `obj_what_changed`.
    pub fn apply_to(&self, obj: &mut NovaObject) {
        for (k, v) in &self.updates {
            if k != "obj_what_changed" {
                obj.data.insert(k.clone(), v.clone());
            }
        }
        let changed = self.what_changed();
        obj.changes = if changed.is_empty() {
            None
        } else {
            Some(changed)
        };
    }
}

impl ReplyResult {
    /// Interprets `result` (the reply's `result` key) given the method it answers.
    pub fn decode(method: Option<&str>, result: &Value) -> Result<ReplyResult, CallError> {
        let invalid = |source| CallError::InvalidResult {
            method: method.unwrap_or("").to_string(),
            source,
        };
        if result.is_null() {
            return Ok(ReplyResult::None);
        }
        match method {
            Some("object_action") => {
                let (updates, ret): (Map<String, Value>, Value) =
                    serde_json::from_value(result.clone()).map_err(invalid)?;
                Ok(ReplyResult::ObjectAction(ObjectActionResult {
                    updates,
                    result: ret,
                }))
            }
            Some("select_destinations") if selections_shape(result) => Ok(ReplyResult::Selections(
                serde_json::from_value(result.clone()).map_err(invalid)?,
            )),
            _ if NovaObject::is_primitive(result) => {
                Ok(ReplyResult::Object(NovaObject::from_primitive(result)?))
            }
            _ => Ok(ReplyResult::Value(result.clone())),
        }
    }

    /// The wire form of the result.
    pub fn to_value(&self) -> Result<Value, CallError> {
        Ok(match self {
            ReplyResult::None => Value::Null,
            ReplyResult::ObjectAction(r) => {
                Value::Array(vec![Value::Object(r.updates.clone()), r.result.clone()])
            }
            ReplyResult::Object(o) => o.to_primitive(),
            ReplyResult::Selections(s) => {
                serde_json::to_value(s).map_err(|source| CallError::Encode {
                    method: "select_destinations".into(),
                    source,
                })?
            }
            ReplyResult::Value(v) => v.clone(),
        })
    }
}

fn selections_shape(v: &Value) -> bool {
    v.as_array().is_some_and(|outer| {
        outer.iter().all(|inner| {
            inner
                .as_array()
                .is_some_and(|items| items.iter().all(NovaObject::is_primitive))
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn instance() -> Value {
        json!({"nova_object.name": "Instance", "nova_object.namespace": "nova",
               "nova_object.version": "2.8", "nova_object.data": {"uuid": "u1", "host": "h1"}})
    }

    fn request(method: &str, version: &str, args: Value) -> RpcRequest {
        let mut req = RpcRequest::cast(
            method,
            args.as_object().unwrap().clone(),
            version,
            super::super::context::RequestContext::default(),
        );
        req.unique_id = Field::Unset;
        req
    }

    #[test]
    fn compute_calls_decode_into_typed_structs_and_back() {
        let args = json!({"instance": instance(), "clean_shutdown": true});
        let req = request("stop_instance", "6.0", args.clone());
        let call = RpcCall::decode(&req).unwrap();
        let RpcCall::Compute(ComputeCall::StopInstance(stop)) = &call else {
            panic!("{call:?}")
        };
        assert_eq!(stop.clean_shutdown.get(), Some(&true));
        assert_eq!(call.instance_uuid().as_deref(), Some("u1"));
        assert_eq!(Value::Object(call.to_args().unwrap()), args);
    }

    #[test]
    fn missing_required_argument_is_an_error_but_unknown_method_is_not() {
        let req = request("stop_instance", "6.0", json!({"instance": instance()}));
        assert!(matches!(
            RpcCall::decode(&req),
            Err(CallError::InvalidArgs { .. })
        ));
        let req = request("frobnicate_instance", "6.0", json!({"x": 1}));
        let call = RpcCall::decode(&req).unwrap();
        assert!(!call.is_typed());
        assert_eq!(call.method(), "frobnicate_instance");
        assert_eq!(call.to_args().unwrap()["x"], json!(1));
    }

    #[test]
    fn other_versions_and_namespaces_are_not_typed_as_compute() {
        let req = request("stop_instance", "5.0", json!({"instance": instance()}));
        assert!(!RpcCall::decode(&req).unwrap().is_typed());
        let mut req = request("rebuild_instance", "1.25", json!({"instance": instance()}));
        req.namespace = Field::Set("compute_task".into());
        assert_eq!(
            RpcCall::decode(&req).unwrap().target(),
            RpcTarget::ComputeTask
        );
    }

    #[test]
    fn conductor_helpers_build_what_nova_sends() {
        let c =
            ObjectClassActionVersions::event_start("u1", "compute_stop_instance", "h1").unwrap();
        let args = encode_args("object_class_action_versions", &c).unwrap();
        assert_eq!(
            Value::Object(args),
            json!({"objname": "InstanceActionEvent", "objmethod": "event_start",
                   "object_versions": {"InstanceActionEvent": "1.4"},
                   "args": ["u1", "compute_stop_instance"],
                   "kwargs": {"want_result": false, "host": "h1"}})
        );
        assert!(ObjectClassActionVersions::new("Nope", "x", vec![], Map::new()).is_err());
    }

    #[test]
    fn object_action_result_applies_like_remotable() {
        let r = ReplyResult::decode(
            Some("object_action"),
            &json!([{"updated_at": "2026-11-27T16:16:47Z", "obj_what_changed": []}, null]),
        )
        .unwrap();
        let ReplyResult::ObjectAction(res) = r else {
            panic!()
        };
        let mut obj = NovaObject::from_primitive(&json!({"nova_object.name": "Service",
            "nova_object.namespace": "nova", "nova_object.version": "1.22",
            "nova_object.data": {"report_count": 3}, "nova_object.changes": ["report_count"]}))
        .unwrap();
        res.apply_to(&mut obj);
        assert_eq!(obj.get("updated_at"), Some(&json!("2026-11-27T16:16:47Z")));
        assert!(obj.changes.is_none());
    }
}
