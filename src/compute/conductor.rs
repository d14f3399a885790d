//! The conductor client: nova-compute never touches a database; every object
//! read and write goes through nova-conductor's indirection API (topic
//! `conductor`, version 3.0), and builds are rescheduled through `compute_task`.

use std::time::Duration;

use serde_json::{json, Map, Value};

use super::ComputeError;
use crate::nova::object::NovaObject;
use crate::nova::rpc_methods::{ObjectAction, ObjectActionResult, ObjectClassActionVersions};
use crate::rpc::{Context, RpcClient, RpcError, Target, Transport};

/// Talks to nova-conductor.
#[derive(Clone)]
pub struct Conductor {
    client: RpcClient,
    transport: Transport,
    timeout: Duration,
}

fn to_map(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m,
        _ => Map::new(),
    }
}

impl Conductor {
    pub fn new(transport: Transport, timeout: Duration) -> Conductor {
        let client = RpcClient::new(
            transport.clone(),
            Target::new("conductor").with_version("3.0"),
        )
        .with_timeout(timeout);
        Conductor {
            client,
            transport,
            timeout,
        }
    }

    /// The same conductor with calls bounded by `timeout` instead of
    /// `rpc_response_timeout`.
    pub fn with_timeout(&self, timeout: Duration) -> Conductor {
        Conductor {
            client: self.client.clone().with_timeout(timeout),
            transport: self.transport.clone(),
            timeout,
        }
    }

    /// `baseapi` ping, as `conductor.API.wait_until_ready` sends it: ten tries
    /// of 10 s, then tries of `rpc_response_timeout` until one answers.
    pub async fn wait_until_ready(&self, ctx: &Context) -> Result<(), ComputeError> {
        let ping = RpcClient::new(
            self.transport.clone(),
            Target::new("conductor")
                .with_namespace("baseapi")
                .with_version("1.0"),
        );
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            let timeout = if attempt <= 10 {
                Duration::from_secs(10)
            } else {
                self.timeout
            };
            let mut args = Map::new();
            args.insert("arg".into(), json!("1.21 GigaWatts"));
            match ping
                .clone()
                .with_timeout(timeout)
                .call(ctx, "ping", args)
                .await
            {
                Ok(_) => return Ok(()),
                Err(RpcError::Timeout { .. }) => {
                    tracing::warn!(attempt, "nova-conductor did not answer the ping yet");
                }
                Err(e) => {
                    tracing::warn!(attempt, error = %e, "pinging nova-conductor failed");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
    }

    /// `Obj.method(*args, **kwargs)` of a class, run by the conductor.
    pub async fn class_action(
        &self,
        ctx: &Context,
        objname: &str,
        objmethod: &str,
        args: Vec<Value>,
        kwargs: Map<String, Value>,
    ) -> Result<Value, ComputeError> {
        let call = ObjectClassActionVersions::new(objname, objmethod, args, kwargs)?;
        let args = to_map(serde_json::to_value(&call).map_err(ComputeError::Encode)?);
        Ok(self
            .client
            .call(ctx, "object_class_action_versions", args)
            .await?)
    }

    /// `obj.method(*args, **kwargs)` run by the conductor; applies its updates
    /// to `obj` as oslo's `remotable` wrapper does, and returns the result.
    pub async fn object_action(
        &self,
        ctx: &Context,
        obj: &mut NovaObject,
        objmethod: &str,
        args: Vec<Value>,
        kwargs: Map<String, Value>,
    ) -> Result<Value, ComputeError> {
        let call = ObjectAction::new(obj.clone(), objmethod, args, kwargs);
        let args = to_map(serde_json::to_value(&call).map_err(ComputeError::Encode)?);
        let reply = self.client.call(ctx, "object_action", args).await?;
        let (updates, result): (Map<String, Value>, Value) =
            serde_json::from_value(reply).map_err(ComputeError::Decode)?;
        let res = ObjectActionResult { updates, result };
        res.apply_to(obj);
        Ok(res.result)
    }

    /// `object_backport_versions`: an object this side received at a version it
    /// does not implement, returned at the versions of nova 34's manifest.
    pub async fn backport(
        &self,
        ctx: &Context,
        obj: &NovaObject,
    ) -> Result<NovaObject, ComputeError> {
        let versions = crate::nova::objects::manifest::object_versions_arg(&obj.name)
            .ok_or_else(|| ComputeError::Invalid(format!("unknown object {}", obj.name)))?;
        let mut args = Map::new();
        args.insert("objinst".into(), obj.to_primitive());
        args.insert("object_versions".into(), Value::Object(versions));
        let reply = self
            .client
            .call(ctx, "object_backport_versions", args)
            .await?;
        Ok(NovaObject::from_primitive(&reply)?)
    }

    /// `InstanceActionEvent.event_start`: under the caller's request id, or Nova
    /// cannot find the action.
    pub async fn event_start(
        &self,
        ctx: &Context,
        uuid: &str,
        event: &str,
        host: &str,
    ) -> Result<(), ComputeError> {
        let call = ObjectClassActionVersions::event_start(uuid, event, host)?;
        let args = to_map(serde_json::to_value(&call).map_err(ComputeError::Encode)?);
        self.client
            .call(ctx, "object_class_action_versions", args)
            .await?;
        Ok(())
    }

    /// `InstanceActionEvent.event_finish_with_failure`; no error means success.
    pub async fn event_finish(
        &self,
        ctx: &Context,
        uuid: &str,
        event: &str,
        error: Option<&str>,
    ) -> Result<(), ComputeError> {
        let error = error.map(|e| crate::text::printable(e, 4096));
        let tb = error
            .as_ref()
            .map(|e| format!("  File \"corral\", in {event}\n    {e}\n"));
        let call =
            ObjectClassActionVersions::event_finish(uuid, event, error.as_deref(), tb.as_deref())?;
        let args = to_map(serde_json::to_value(&call).map_err(ComputeError::Encode)?);
        self.client
            .call(ctx, "object_class_action_versions", args)
            .await?;
        Ok(())
    }

    /// Casts `build_instances` to the conductor's `compute_task` API (1.19):
    /// the conductor picks the next alternate host.
    pub async fn build_instances(
        &self,
        ctx: &Context,
        args: Map<String, Value>,
    ) -> Result<(), ComputeError> {
        let client = RpcClient::new(
            self.transport.clone(),
            Target::new("conductor")
                .with_namespace("compute_task")
                .with_version("1.19"),
        );
        client.cast(ctx, "build_instances", args).await?;
        Ok(())
    }

    /// A fanout cast to the schedulers (`update_instance_info` and friends).
    pub async fn scheduler_fanout(
        &self,
        ctx: &Context,
        method: &str,
        args: Map<String, Value>,
    ) -> Result<(), ComputeError> {
        let client = RpcClient::new(
            self.transport.clone(),
            Target::new("scheduler").with_version("4.2"),
        );
        client.fanout_cast(ctx, method, args).await?;
        Ok(())
    }
}

/// What the compute manager asks of nova-conductor: a trait, so the manager's
/// decisions (what it saves, which events it records) can be tested against
/// a double.
#[async_trait::async_trait]
pub trait ConductorApi: Send + Sync {
    async fn class_action(
        &self,
        ctx: &Context,
        objname: &str,
        objmethod: &str,
        args: Vec<Value>,
        kwargs: Map<String, Value>,
    ) -> Result<Value, ComputeError>;
    async fn object_action(
        &self,
        ctx: &Context,
        obj: &mut NovaObject,
        objmethod: &str,
        args: Vec<Value>,
        kwargs: Map<String, Value>,
    ) -> Result<Value, ComputeError>;
    async fn event_start(
        &self,
        ctx: &Context,
        uuid: &str,
        event: &str,
        host: &str,
    ) -> Result<(), ComputeError>;
    async fn event_finish(
        &self,
        ctx: &Context,
        uuid: &str,
        event: &str,
        error: Option<&str>,
    ) -> Result<(), ComputeError>;
    async fn build_instances(
        &self,
        ctx: &Context,
        args: Map<String, Value>,
    ) -> Result<(), ComputeError>;
    async fn scheduler_fanout(
        &self,
        ctx: &Context,
        method: &str,
        args: Map<String, Value>,
    ) -> Result<(), ComputeError>;
}

#[async_trait::async_trait]
impl ConductorApi for Conductor {
    async fn class_action(
        &self,
        ctx: &Context,
        objname: &str,
        objmethod: &str,
        args: Vec<Value>,
        kwargs: Map<String, Value>,
    ) -> Result<Value, ComputeError> {
        Conductor::class_action(self, ctx, objname, objmethod, args, kwargs).await
    }
    async fn object_action(
        &self,
        ctx: &Context,
        obj: &mut NovaObject,
        objmethod: &str,
        args: Vec<Value>,
        kwargs: Map<String, Value>,
    ) -> Result<Value, ComputeError> {
        Conductor::object_action(self, ctx, obj, objmethod, args, kwargs).await
    }
    async fn event_start(
        &self,
        ctx: &Context,
        uuid: &str,
        event: &str,
        host: &str,
    ) -> Result<(), ComputeError> {
        Conductor::event_start(self, ctx, uuid, event, host).await
    }
    async fn event_finish(
        &self,
        ctx: &Context,
        uuid: &str,
        event: &str,
        error: Option<&str>,
    ) -> Result<(), ComputeError> {
        Conductor::event_finish(self, ctx, uuid, event, error).await
    }
    async fn build_instances(
        &self,
        ctx: &Context,
        args: Map<String, Value>,
    ) -> Result<(), ComputeError> {
        Conductor::build_instances(self, ctx, args).await
    }
    async fn scheduler_fanout(
        &self,
        ctx: &Context,
        method: &str,
        args: Map<String, Value>,
    ) -> Result<(), ComputeError> {
        Conductor::scheduler_fanout(self, ctx, method, args).await
    }
}
