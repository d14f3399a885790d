//! Messages built from scratch by this crate (what a Rust compute sends): each must
//! decode back to itself here, and, with `NOVA_WIRE_DUMP_DIR` set, is written out as
//! `built-*.json` for `tests/roundtrip_check.py` to decode with real nova.

use std::fs;
use std::path::PathBuf;

use corral::nova::envelope::{RemoteFailure, RpcReply, RpcRequest};
use corral::nova::fields::{Field, NovaDateTime};
use corral::nova::object::VersionedObject;
use corral::nova::objects::instance::{power_state, task_states, vm_states};
use corral::nova::objects::{Instance, Service};
use corral::nova::rpc_methods::{ObjectAction, ObjectClassActionVersions};
use corral::nova::{decode_file, encode_body, RequestContext, RpcMessage};
use serde_json::{json, Map, Value};
use time::macros::datetime;

fn context() -> RequestContext {
    RequestContext::admin(
        "req-7d2b3ff7-9c95-4e56-b840-f1292f4cdea3".into(),
        datetime!(2026-11-27 16:16:42.235402 UTC),
    )
}

fn args_of<T: serde::Serialize>(v: &T) -> Map<String, Value> {
    match serde_json::to_value(v).unwrap() {
        Value::Object(m) => m,
        _ => panic!("not an object"),
    }
}

fn call(method: &str, args: Map<String, Value>, version: &str) -> RpcMessage {
    RpcMessage::Request(Box::new(RpcRequest::call(
        method,
        args,
        version,
        context(),
        "reply_d2ce3476594a40eeb422364a5078a91f",
        None,
    )))
}

fn built() -> Vec<(&'static str, RpcMessage)> {
    let mut out = Vec::new();

    let mut ping = RpcRequest::call(
        "ping",
        json!({"arg": "1.21 GigaWatts"})
            .as_object()
            .unwrap()
            .clone(),
        "1.0",
        context(),
        "reply_d2ce3476594a40eeb422364a5078a91f",
        None,
    );
    ping.namespace = Field::Set("baseapi".into());
    out.push(("ping", RpcMessage::Request(Box::new(ping))));

    // Service.create as a registering compute sends it: version must be in changes.
    let mut service = Service {
        host: Field::Set("ct-host-9".into()),
        binary: Field::Set("nova-compute".into()),
        topic: Field::Set("compute".into()),
        report_count: Field::Set(0),
        version: Field::Set(corral::nova::objects::service::NOVA_34_SERVICE_VERSION),
        ..Service::default()
    };
    service.record_changes_since(&Service::default()).unwrap();
    let create = ObjectAction::new(service.to_object().unwrap(), "create", vec![], Map::new());
    out.push((
        "service-create",
        call("object_action", args_of(&create), "3.0"),
    ));

    let start = ObjectClassActionVersions::event_start(
        "fa144a2d-fb7a-4a9d-af75-6a9617d5ecb4",
        "compute_stop_instance",
        "ct-host-9",
    )
    .unwrap();
    out.push((
        "event-start",
        call("object_class_action_versions", args_of(&start), "3.0"),
    ));

    // Instance.save after a stop: fields changed, node/compute_id untouched.
    let mut inst = Instance {
        uuid: Field::Set("fa144a2d-fb7a-4a9d-af75-6a9617d5ecb4".into()),
        vm_state: Field::Set(vm_states::ACTIVE.into()),
        task_state: Field::Set(task_states::POWERING_OFF.into()),
        power_state: Field::Set(power_state::RUNNING),
        ..Instance::default()
    };
    inst.reset_changes();
    let before = inst.clone();
    inst.vm_state = Field::Set(vm_states::STOPPED.into());
    inst.task_state = Field::Null;
    inst.power_state = Field::Set(power_state::SHUTDOWN);
    inst.launched_at = Field::Set(NovaDateTime::object(datetime!(2026-11-27 16:23:21.5 UTC)));
    let changed = inst.record_changes_since(&before).unwrap();
    assert_eq!(
        changed,
        ["power_state", "vm_state", "task_state", "launched_at"]
    );
    let mut kwargs = Map::new();
    kwargs.insert(
        "expected_task_state".into(),
        json!([task_states::POWERING_OFF]),
    );
    let save = ObjectAction::new(inst.to_object().unwrap(), "save", vec![], kwargs);
    out.push((
        "instance-save",
        call("object_action", args_of(&save), "3.0"),
    ));

    out.push((
        "reply-console",
        RpcMessage::Reply(Box::new(RpcReply::success(
            "8f0e4d011dbe48e5866bf2fac20cb5ba",
            json!("line 1\nline 2 \u{e9}"),
        ))),
    ));
    out.push((
        "reply-heartbeat",
        RpcMessage::Reply(Box::new(RpcReply::heartbeat(
            "8f0e4d011dbe48e5866bf2fac20cb5ba",
        ))),
    ));
    let mut kw = Map::new();
    kw.insert(
        "instance_id".into(),
        json!("fa144a2d-fb7a-4a9d-af75-6a9617d5ecb4"),
    );
    kw.insert("code".into(), json!(404));
    out.push((
        "reply-instance-not-found",
        RpcMessage::Reply(Box::new(RpcReply::failure(
            "8f0e4d011dbe48e5866bf2fac20cb5ba",
            RemoteFailure::nova(
                "InstanceNotFound",
                "Instance fa144a2d-fb7a-4a9d-af75-6a9617d5ecb4 could not be found.",
                kw,
            ),
        ))),
    ));
    out.push((
        "reply-not-implemented",
        RpcMessage::Reply(Box::new(RpcReply::failure(
            "8f0e4d011dbe48e5866bf2fac20cb5ba",
            RemoteFailure::not_implemented(""),
        ))),
    ));
    out
}

#[test]
fn built_messages_decode_back_and_can_be_dumped() {
    let dump = std::env::var_os("NOVA_WIRE_DUMP_DIR").map(PathBuf::from);
    for (name, msg) in built() {
        let body = encode_body(&msg).unwrap();
        let decoded = decode_file(&body).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(decoded.len(), 1);
        assert_eq!(decoded[0].envelope.message, msg, "{name}");
        assert_eq!(decoded[0].reencode_typed().unwrap(), body, "{name}");
        if let Some(dir) = &dump {
            fs::create_dir_all(dir).unwrap();
            fs::write(dir.join(format!("built-{name}.json")), &body).unwrap();
        }
    }
}
