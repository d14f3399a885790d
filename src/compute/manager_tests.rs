//! The manager against test doubles of `Driver` and of the conductor: which
//! driver operations each RPC method makes, in what order, with what
//! arguments, what it saves (vm_state, task_state, power_state, the expected
//! task state), which faults and action events it records, and how driver
//! answers become replies. A conductor that refuses every call shows what the
//! manager does before and without a successful save.
//!
//! Long because it is a table of cases, one per RPC method and outcome, over one
//! set of doubles; the manager's other test files (`manager_net_tests.rs`,
//! `manager_shelve_tests.rs`) share the doubles.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Map, Value};

use super::*;
use crate::config::{Ini, Overrides};
use crate::driver::{
    BackendInfo, ImageStore, InstanceInfo, InstanceSpec, InstanceView, PowerState, StartGate,
    VifSpec,
};
use crate::runtime::ExecOutput;
use crate::store::ImageRecord;

/// Records every driver call and answers from a script.
#[derive(Default)]
struct FakeDriver {
    calls: Mutex<Vec<String>>,
    /// The power state `get_info` reports; `None`: the instance is not found.
    power: Mutex<Option<PowerState>>,
    stats: Mutex<Option<crate::runtime::cgroups::Stats>>,
    /// What `console_output` answers.
    console: Mutex<Option<Result<String, String>>>,
    /// Operations (`pause`, `power_on` ...) that fail with a runtime error.
    failing: Mutex<Vec<&'static str>>,
    /// How long power_on takes, and the most power_on calls seen at once.
    delay: Mutex<Duration>,
    in_flight: Mutex<(usize, usize)>,
    /// Every image is in the cache (a build needs no Glance).
    cached_images: Mutex<bool>,
    /// The specs `spawn` was given.
    specs: Mutex<Vec<InstanceSpec>>,
    /// What `is_rescued` answers.
    rescued: Mutex<bool>,
    /// The config drives `rescue` was given.
    drives: Mutex<Vec<crate::driver::ConfigDrive>>,
}

impl FakeDriver {
    fn running() -> Arc<FakeDriver> {
        let d = FakeDriver::default();
        *d.power.lock().unwrap() = Some(PowerState::Running);
        Arc::new(d)
    }

    fn record(&self, call: String) {
        self.calls.lock().unwrap().push(call);
    }

    /// A live instance's new power state (a missing one stays missing).
    fn set_power(&self, p: PowerState) {
        let mut power = self.power.lock().unwrap();
        if power.is_some() {
            *power = Some(p);
        }
    }

    fn calls(&self) -> Vec<String> {
        self.calls.lock().unwrap().clone()
    }

    fn outcome(&self, op: &'static str) -> Result<(), DriverError> {
        if self.failing.lock().unwrap().contains(&op) {
            return Err(DriverError::Invalid(format!("{op} failed")));
        }
        Ok(())
    }
}

#[async_trait::async_trait]
impl ImageStore for FakeDriver {
    async fn import_image(
        &self,
        archive: &Path,
        alias: Option<&str>,
        _declared: Option<crate::image::format::Declared>,
    ) -> Result<ImageRecord, DriverError> {
        self.record(format!("import_image {} {alias:?}", archive.display()));
        Err(DriverError::Invalid("no images here".into()))
    }
    fn image_upload_path(&self) -> PathBuf {
        PathBuf::from("/nonexistent/upload")
    }
    async fn list_images(&self) -> Result<Vec<ImageRecord>, DriverError> {
        Ok(Vec::new())
    }
    async fn get_image(&self, key: &str) -> Result<ImageRecord, DriverError> {
        self.record(format!("get_image {key}"));
        if *self.cached_images.lock().unwrap() {
            return Ok(ImageRecord {
                fingerprint: "f1".into(),
                alias: Some(key.into()),
                size: 1,
                created_at: "2026-01-01T00:00:00Z".into(),
                properties: Value::Null,
            });
        }
        Err(DriverError::ImageNotFound(key.into()))
    }
    async fn delete_image(&self, key: &str) -> Result<(), DriverError> {
        self.record(format!("delete_image {key}"));
        Ok(())
    }
}

#[async_trait::async_trait]
impl Driver for FakeDriver {
    fn images(&self) -> &dyn ImageStore {
        self
    }
    fn backend_info(&self) -> BackendInfo {
        BackendInfo {
            runtime: "fake".into(),
            runtime_version: "fake version 1.2.3".into(),
            runtime_root: PathBuf::from("/run/fake"),
            cgroup_mode: "v2".into(),
            storage: "dir".into(),
            idmapped_roots: false,
            root_disk: "loop_file".into(),
        }
    }
    fn check(&self, _spec: &InstanceSpec) -> Result<(), DriverError> {
        Ok(())
    }
    fn device_inventory(&self) -> BTreeMap<String, u32> {
        BTreeMap::new()
    }
    async fn disk_usage(&self) -> Result<crate::storage::usage::DiskUsage, DriverError> {
        Ok(Default::default())
    }
    async fn resolve(&self, key: &str) -> Result<String, DriverError> {
        Ok(key.to_string())
    }
    async fn list(&self) -> Result<Vec<InstanceView>, DriverError> {
        Ok(Vec::new())
    }
    async fn get(&self, key: &str) -> Result<InstanceView, DriverError> {
        Err(DriverError::NotFound(key.into()))
    }
    async fn spawn(
        &self,
        spec: &InstanceSpec,
        start: bool,
        gate: Option<StartGate>,
    ) -> Result<(), DriverError> {
        self.record(format!("spawn {} {start}", spec.uuid));
        self.specs.lock().unwrap().push(spec.clone());
        if let Some(gate) = gate {
            gate.await?;
        }
        self.outcome("spawn")
    }
    async fn attach_interface(&self, uuid: &str, vif: &VifSpec) -> Result<(), DriverError> {
        self.record(format!("attach_interface {uuid} {}", vif.id));
        self.outcome("attach_interface")
    }
    async fn detach_interface(&self, uuid: &str, vif_id: &str) -> Result<(), DriverError> {
        self.record(format!("detach_interface {uuid} {vif_id}"));
        self.outcome("detach_interface")
    }
    async fn set_guest_data(
        &self,
        uuid: &str,
        config_drive: Option<crate::driver::ConfigDrive>,
        network_interfaces: Option<String>,
    ) -> Result<(), DriverError> {
        self.record(format!(
            "set_guest_data {uuid} drive={} interfaces={}",
            config_drive.is_some(),
            network_interfaces.is_some()
        ));
        self.outcome("set_guest_data")
    }
    async fn destroy(&self, uuid: &str) -> Result<(), DriverError> {
        self.record(format!("destroy {uuid}"));
        if self.power.lock().unwrap().is_none() {
            return Err(DriverError::NotFound(uuid.into()));
        }
        self.outcome("destroy")
    }
    async fn power_on(&self, uuid: &str) -> Result<(), DriverError> {
        self.record(format!("power_on {uuid}"));
        {
            let mut f = self.in_flight.lock().unwrap();
            f.0 += 1;
            f.1 = f.1.max(f.0);
        }
        let delay = *self.delay.lock().unwrap();
        tokio::time::sleep(delay).await;
        self.in_flight.lock().unwrap().0 -= 1;
        self.outcome("power_on")?;
        self.set_power(PowerState::Running);
        Ok(())
    }
    async fn power_off(
        &self,
        uuid: &str,
        timeout: Duration,
        force: bool,
    ) -> Result<(), DriverError> {
        self.record(format!(
            "power_off {uuid} {}s force={force}",
            timeout.as_secs()
        ));
        let delay = *self.delay.lock().unwrap();
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        self.outcome("power_off")?;
        self.set_power(PowerState::Shutdown);
        Ok(())
    }
    async fn reboot(&self, uuid: &str, hard: bool, timeout: Duration) -> Result<(), DriverError> {
        self.record(format!("reboot {uuid} hard={hard} {}s", timeout.as_secs()));
        self.outcome("reboot")
    }
    async fn pause(&self, uuid: &str) -> Result<(), DriverError> {
        self.record(format!("pause {uuid}"));
        self.outcome("pause")?;
        self.set_power(PowerState::Paused);
        Ok(())
    }
    async fn unpause(&self, uuid: &str) -> Result<(), DriverError> {
        self.record(format!("unpause {uuid}"));
        self.outcome("unpause")?;
        self.set_power(PowerState::Running);
        Ok(())
    }
    async fn suspend(&self, uuid: &str) -> Result<(), DriverError> {
        self.record(format!("suspend {uuid}"));
        self.outcome("suspend")?;
        self.set_power(PowerState::Suspended);
        Ok(())
    }
    async fn resume(&self, uuid: &str) -> Result<(), DriverError> {
        self.record(format!("resume {uuid}"));
        self.outcome("resume")?;
        self.set_power(PowerState::Running);
        Ok(())
    }
    async fn rebuild(
        &self,
        uuid: &str,
        image: &str,
        preserve_ephemeral: bool,
    ) -> Result<(), DriverError> {
        let keep = if preserve_ephemeral {
            " preserve_ephemeral"
        } else {
            ""
        };
        self.record(format!("rebuild {uuid} {image}{keep}"));
        self.outcome("rebuild")
    }
    async fn get_info(&self, uuid: &str) -> Result<InstanceInfo, DriverError> {
        self.record(format!("get_info {uuid}"));
        let power = (*self.power.lock().unwrap()).ok_or(DriverError::NotFound(uuid.into()))?;
        Ok(InstanceInfo {
            power_state: power,
            status: "Running",
            pid: Some(42),
            stats: self.stats.lock().unwrap().clone(),
        })
    }
    async fn console_output(
        &self,
        uuid: &str,
        lines: Option<usize>,
    ) -> Result<String, DriverError> {
        self.record(format!("console_output {uuid} {lines:?}"));
        match self.console.lock().unwrap().clone() {
            Some(Ok(text)) => Ok(text),
            Some(Err(e)) if e == "not found" => Err(DriverError::NotFound(uuid.into())),
            Some(Err(e)) => Err(DriverError::Invalid(e)),
            None => Ok(String::new()),
        }
    }
    async fn exec(
        &self,
        uuid: &str,
        _argv: &[String],
        _env: &[String],
        _cwd: Option<&str>,
        _timeout: Duration,
    ) -> Result<ExecOutput, DriverError> {
        Err(DriverError::NotFound(uuid.into()))
    }
    async fn list_instances(&self) -> Result<Vec<String>, DriverError> {
        Ok(Vec::new())
    }
    async fn snapshot_create(
        &self,
        uuid: &str,
        name: &str,
    ) -> Result<crate::driver::SnapshotMade, DriverError> {
        self.record(format!("snapshot_create {uuid} {name}"));
        if self.power.lock().unwrap().is_none() {
            return Err(DriverError::NotFound(uuid.into()));
        }
        self.outcome("snapshot_create")?;
        Ok(crate::driver::SnapshotMade {
            snapshot: crate::store::SnapshotRecord {
                instance: uuid.into(),
                name: name.into(),
                image: "f1".into(),
                storage: "overlay".into(),
                size: 0,
                created_at: "2026-01-01T00:00:00Z".into(),
            },
            pause: None,
        })
    }
    async fn snapshot_list(
        &self,
        uuid: &str,
    ) -> Result<Vec<crate::store::SnapshotRecord>, DriverError> {
        self.record(format!("snapshot_list {uuid}"));
        Ok(Vec::new())
    }
    async fn snapshot_get(
        &self,
        uuid: &str,
        name: &str,
    ) -> Result<crate::store::SnapshotRecord, DriverError> {
        Err(DriverError::NotFound(format!("{uuid}/{name}")))
    }
    async fn snapshot_restore(&self, uuid: &str, name: &str) -> Result<(), DriverError> {
        self.record(format!("snapshot_restore {uuid} {name}"));
        Ok(())
    }
    async fn snapshot_delete(&self, uuid: &str, name: &str) -> Result<(), DriverError> {
        self.record(format!("snapshot_delete {uuid} {name}"));
        Ok(())
    }
    async fn snapshot_export(
        &self,
        uuid: &str,
        name: &str,
        _out: Box<dyn std::io::Write + Send>,
    ) -> Result<u64, DriverError> {
        self.record(format!("snapshot_export {uuid} {name}"));
        Ok(0)
    }
    async fn snapshot_export_len(&self, _uuid: &str, _name: &str) -> Result<u64, DriverError> {
        Ok(0)
    }
    async fn publish(
        &self,
        uuid: &str,
        _alias: Option<&str>,
    ) -> Result<crate::store::ImageRecord, DriverError> {
        Err(DriverError::NotFound(uuid.into()))
    }
    async fn rescue(
        &self,
        uuid: &str,
        image: &str,
        drive: Option<crate::driver::ConfigDrive>,
    ) -> Result<(), DriverError> {
        self.record(format!("rescue {uuid} {image} drive={}", drive.is_some()));
        if let Some(d) = drive {
            self.drives.lock().unwrap().push(d);
        }
        self.outcome("rescue")?;
        self.set_power(PowerState::Running);
        Ok(())
    }
    async fn is_rescued(&self, _uuid: &str) -> bool {
        *self.rescued.lock().unwrap()
    }
    async fn unrescue(&self, uuid: &str) -> Result<(), DriverError> {
        self.record(format!("unrescue {uuid}"));
        self.outcome("unrescue")?;
        self.set_power(PowerState::Running);
        Ok(())
    }
}

/// The conductor: records saves, creates, action events and casts; answers
/// `InstanceList.get_by_host` with `instances`; refuses everything when
/// `refuse` is set.
#[derive(Default)]
struct FakeConductor {
    refuse: bool,
    instances: Mutex<Vec<Value>>,
    log: Mutex<Vec<Value>>,
}

impl FakeConductor {
    fn refusing() -> Arc<FakeConductor> {
        Arc::new(FakeConductor {
            refuse: true,
            ..Default::default()
        })
    }

    fn answering() -> Arc<FakeConductor> {
        Arc::new(FakeConductor::default())
    }

    fn check(&self) -> Result<(), ComputeError> {
        if self.refuse {
            return Err(ComputeError::Invalid("no conductor".into()));
        }
        Ok(())
    }

    fn log(&self) -> Vec<Value> {
        self.log.lock().unwrap().clone()
    }

    /// The saves, as `{field: value, ..., "expected": expected_task_state}`.
    fn saves(&self) -> Vec<Value> {
        self.log()
            .into_iter()
            .filter(|e| e["op"] == "save")
            .map(|e| e["fields"].clone())
            .collect()
    }

    fn events(&self) -> Vec<Value> {
        self.log()
            .into_iter()
            .filter(|e| e["op"] == "event")
            .map(|e| e["event"].clone())
            .collect()
    }

    fn faults(&self) -> Vec<Value> {
        self.log()
            .into_iter()
            .filter(|e| e["op"] == "create" && e["object"] == "InstanceFault")
            .map(|e| e["fields"].clone())
            .collect()
    }
}

#[async_trait::async_trait]
impl super::ConductorApi for FakeConductor {
    async fn class_action(
        &self,
        _ctx: &Context,
        objname: &str,
        objmethod: &str,
        _args: Vec<Value>,
        _kwargs: Map<String, Value>,
    ) -> Result<Value, ComputeError> {
        self.check()?;
        if (objname, objmethod) == ("InstanceList", "get_by_host") {
            let mut list = NovaObject::new_nova34("InstanceList").unwrap();
            list.data.insert(
                "objects".into(),
                Value::Array(self.instances.lock().unwrap().clone()),
            );
            return Ok(list.to_primitive());
        }
        if (objname, objmethod) == ("InstanceInfoCache", "get_by_instance_uuid") {
            // the last info cache saved (tests hold one instance)
            let saved = self.log().into_iter().rev().find_map(|e| {
                let ok = e["object"] == "InstanceInfoCache" && e["op"] == "save";
                ok.then(|| e["fields"]["network_info"].clone())
            });
            if let Some(text) = saved {
                return Ok(json!({"nova_object.data": {"network_info": text}}));
            }
        }
        Ok(Value::Null)
    }
    async fn object_action(
        &self,
        _ctx: &Context,
        obj: &mut NovaObject,
        objmethod: &str,
        _args: Vec<Value>,
        kwargs: Map<String, Value>,
    ) -> Result<Value, ComputeError> {
        self.check()?;
        let mut fields = Map::new();
        for f in obj.what_changed() {
            if matches!(objmethod, "save") || obj.name == "InstanceFault" {
                fields.insert(f.clone(), obj.get(&f).cloned().unwrap_or(Value::Null));
            }
        }
        if let Some(e) = kwargs.get("expected_task_state") {
            fields.insert("expected".into(), e.clone());
        }
        self.log.lock().unwrap().push(json!({
            "op": objmethod, "object": obj.name, "fields": fields,
        }));
        Ok(Value::Null)
    }
    async fn event_start(
        &self,
        _ctx: &Context,
        _uuid: &str,
        event: &str,
        _host: &str,
    ) -> Result<(), ComputeError> {
        self.check()?;
        self.log
            .lock()
            .unwrap()
            .push(json!({"op": "event", "event": ["start", event]}));
        Ok(())
    }
    async fn event_finish(
        &self,
        _ctx: &Context,
        _uuid: &str,
        event: &str,
        error: Option<&str>,
    ) -> Result<(), ComputeError> {
        self.check()?;
        self.log
            .lock()
            .unwrap()
            .push(json!({"op": "event", "event": ["finish", event, error.is_some()]}));
        Ok(())
    }
    async fn build_instances(
        &self,
        _ctx: &Context,
        _args: Map<String, Value>,
    ) -> Result<(), ComputeError> {
        self.check()?;
        self.log.lock().unwrap().push(json!({"op": "reschedule"}));
        Ok(())
    }
    async fn scheduler_fanout(
        &self,
        _ctx: &Context,
        method: &str,
        _args: Map<String, Value>,
    ) -> Result<(), ComputeError> {
        self.check()?;
        self.log
            .lock()
            .unwrap()
            .push(json!({"op": "fanout", "method": method}));
        Ok(())
    }
}

/// A manager over `driver` whose conductor refuses every call.
fn manager(driver: Arc<FakeDriver>, state: &Path) -> Manager {
    manager_with(driver, FakeConductor::refusing(), state)
}

/// A manager over `driver` and `conductor`; the resource tracker's own
/// conductor and Placement point at ports where nothing listens.
fn manager_with(driver: Arc<FakeDriver>, conductor: Arc<FakeConductor>, state: &Path) -> Manager {
    manager_conf(driver, conductor, state, "")
}

/// [`manager_with`] with more nova.conf text (`[DEFAULT]` options first).
fn manager_conf(
    driver: Arc<FakeDriver>,
    conductor: Arc<FakeConductor>,
    state: &Path,
    extra: &str,
) -> Manager {
    let mut ini = Ini::default();
    ini.merge_str(
        &format!(
            "[DEFAULT]\nhost = ct-host-1\nshutdown_timeout = 7\n\
             transport_url = rabbit://guest:guest@127.0.0.1:1/\n{extra}\n\
             [placement]\nauth_type = none\nendpoint_override = http://127.0.0.1:1/\n"
        ),
        "test",
    )
    .unwrap();
    let overrides = Overrides {
        state_dir: Some(state.to_path_buf()),
        socket: None,
    };
    let cfg = Arc::new(Config::from_ini(&ini, &overrides).unwrap());
    let nova = cfg.nova.clone().unwrap();
    let options =
        crate::rpc::RpcOptions::from_sections(&nova.default_section, &nova.rabbit_section).unwrap();
    let transport = crate::rpc::Transport::from_url(&nova.transport_url, options).unwrap();
    let nowhere = super::super::conductor::Conductor::new(transport, Duration::from_millis(300));
    let tracker = ResourceTracker::new(cfg.clone(), nova.clone(), driver.clone(), nowhere).unwrap();
    Manager::new(cfg, &nova, driver, conductor, tracker).unwrap()
}

/// A message real nova-api sent to a compute host (`tests/fixtures`).
fn captured(name: &str) -> ComputeCall {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/nova-34/api-to-compute")
        .join(name);
    let capture: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let body: Value = serde_json::from_str(capture["body_raw"].as_str().unwrap()).unwrap();
    let msg: Value = serde_json::from_str(body["oslo.message"].as_str().unwrap()).unwrap();
    let args = msg["args"].as_object().cloned().unwrap_or_default();
    ComputeCall::decode(msg["method"].as_str().unwrap(), &args)
        .unwrap()
        .unwrap()
}

fn uuid_of(call: &ComputeCall) -> String {
    call.instance().unwrap().uuid().unwrap().to_string()
}

fn ctx() -> Context {
    Map::new()
}

/// The driver calls a cast makes.
async fn cast_calls(fixture: &str, driver: Arc<FakeDriver>) -> (String, Vec<String>) {
    let dir = tempfile::tempdir().unwrap();
    let m = manager(driver.clone(), dir.path());
    let call = captured(fixture);
    let uuid = uuid_of(&call);
    m.cast(ctx(), call).await;
    (uuid, driver.calls())
}

#[tokio::test]
async fn stop_powers_off_with_the_shutdown_timeout_then_reads_the_power_state() {
    let (uuid, calls) = cast_calls("03-stop_instance.json", FakeDriver::running()).await;
    assert_eq!(
        calls,
        [
            format!("power_off {uuid} 7s force=false"),
            format!("get_info {uuid}")
        ]
    );
}

#[tokio::test]
async fn start_powers_on_then_reads_the_power_state() {
    let (uuid, calls) = cast_calls("04-start_instance.json", FakeDriver::running()).await;
    assert_eq!(
        calls,
        [format!("power_on {uuid}"), format!("get_info {uuid}")]
    );
}

#[tokio::test]
async fn pause_and_unpause_freeze_and_thaw() {
    let (uuid, calls) = cast_calls("07-pause_instance.json", FakeDriver::running()).await;
    assert_eq!(calls, [format!("pause {uuid}"), format!("get_info {uuid}")]);
    let (uuid, calls) = cast_calls("08-unpause_instance.json", FakeDriver::running()).await;
    assert_eq!(
        calls,
        [format!("unpause {uuid}"), format!("get_info {uuid}")]
    );
}

#[tokio::test]
async fn suspend_and_resume_are_not_pause_and_unpause() {
    let (uuid, calls) = cast_calls("09-suspend_instance.json", FakeDriver::running()).await;
    assert_eq!(
        calls,
        [format!("suspend {uuid}"), format!("get_info {uuid}")]
    );
    let (uuid, calls) = cast_calls("10-resume_instance.json", FakeDriver::running()).await;
    assert_eq!(
        calls,
        [format!("resume {uuid}"), format!("get_info {uuid}")]
    );
}

#[tokio::test]
async fn a_failed_driver_operation_settles_nothing() {
    let driver = FakeDriver::running();
    driver.failing.lock().unwrap().push("pause");
    let (uuid, calls) = cast_calls("07-pause_instance.json", driver).await;
    // no power state read for a settle that never happens
    assert_eq!(calls, [format!("pause {uuid}")]);
}

#[tokio::test]
async fn reboot_records_its_task_state_before_touching_the_instance() {
    // The first save (reboot_pending) fails here: the driver is never asked
    // to reboot an instance whose task state Nova did not take.
    let (uuid, calls) = cast_calls("05-reboot_instance.json", FakeDriver::running()).await;
    assert_eq!(calls, [format!("get_info {uuid}")]);
}

#[tokio::test]
async fn rebuild_records_its_task_state_before_touching_the_instance() {
    let (_, calls) = cast_calls("17-rebuild_instance.json", FakeDriver::running()).await;
    assert!(calls.is_empty(), "{calls:?}");
}

#[tokio::test]
async fn terminate_destroys_first_and_a_missing_instance_is_no_failure() {
    let (uuid, calls) = cast_calls("21-terminate_instance.json", FakeDriver::running()).await;
    assert_eq!(calls, [format!("destroy {uuid}")]);
    // gone already: still only the destroy, and no panic or retry
    let (uuid, calls) = cast_calls(
        "21-terminate_instance.json",
        Arc::new(FakeDriver::default()),
    )
    .await;
    assert_eq!(calls, [format!("destroy {uuid}")]);
}

#[tokio::test]
async fn a_build_nova_did_not_let_start_never_reaches_the_driver() {
    // The save to `building` (expected task state scheduling) fails here,
    // as when the instance was deleted meanwhile: the build is abandoned.
    let (_, calls) = cast_calls("02-build_and_run_instance.json", FakeDriver::running()).await;
    assert!(calls.is_empty(), "{calls:?}");
}

#[tokio::test]
async fn unsupported_casts_reach_no_driver_operation() {
    let (_, calls) = cast_calls("14-rescue_instance.json", FakeDriver::running()).await;
    assert!(calls.is_empty(), "{calls:?}");
}

#[tokio::test]
async fn casts_on_one_instance_run_one_at_a_time() {
    let driver = FakeDriver::running();
    *driver.delay.lock().unwrap() = Duration::from_millis(100);
    let dir = tempfile::tempdir().unwrap();
    let m = Arc::new(manager(driver.clone(), dir.path()));
    let (a, b) = (m.clone(), m.clone());
    tokio::join!(
        a.cast(ctx(), captured("04-start_instance.json")),
        b.cast(ctx(), captured("04-start_instance.json")),
    );
    let calls = driver.calls();
    assert_eq!(
        calls.iter().filter(|c| c.starts_with("power_on")).count(),
        2
    );
    assert_eq!(driver.in_flight.lock().unwrap().1, 1, "{calls:?}");
}

#[tokio::test]
async fn console_output_asks_the_driver_for_the_tail() {
    let driver = FakeDriver::running();
    *driver.console.lock().unwrap() = Some(Ok("login: ".into()));
    let dir = tempfile::tempdir().unwrap();
    let m = manager(driver.clone(), dir.path());
    let call = captured("11-get_console_output.json");
    let uuid = uuid_of(&call);
    let ComputeCall::GetConsoleOutput(a) = &call else {
        panic!("not get_console_output");
    };
    let lines = a.tail_length.get().and_then(|n| usize::try_from(*n).ok());
    assert_eq!(m.call(ctx(), call).await.unwrap(), json!("login: "));
    assert_eq!(driver.calls(), [format!("console_output {uuid} {lines:?}")]);
}

#[tokio::test]
async fn console_output_failures_map_to_nova_exceptions() {
    let driver = FakeDriver::running();
    let dir = tempfile::tempdir().unwrap();
    let m = manager(driver.clone(), dir.path());
    *driver.console.lock().unwrap() = Some(Err("not found".into()));
    let call = captured("11-get_console_output.json");
    let uuid = uuid_of(&call);
    let f = m.call(ctx(), call).await.unwrap_err();
    assert_eq!(f.class, "InstanceNotFound");
    assert_eq!(f.kwargs.get("instance_id"), Some(&json!(uuid)));
    *driver.console.lock().unwrap() = Some(Err("disk on fire".into()));
    let f = m
        .call(ctx(), captured("11-get_console_output.json"))
        .await
        .unwrap_err();
    // the driver's Invalid is reported as InvalidInput, as in faults
    assert_eq!(f.class, "InvalidInput");
    assert!(f.message.contains("disk on fire"), "{}", f.message);
}

#[tokio::test]
async fn instance_diagnostics_come_from_the_driver_info() {
    let driver = FakeDriver::running();
    *driver.power.lock().unwrap() = Some(PowerState::Paused);
    *driver.stats.lock().unwrap() = Some(crate::runtime::cgroups::Stats {
        cpu_usage_ns: Some(5_000),
        memory_usage_bytes: Some(64 << 20),
        memory_limit_bytes: Some(512 << 20),
        ..Default::default()
    });
    let dir = tempfile::tempdir().unwrap();
    let m = manager(driver.clone(), dir.path());
    let v = m
        .call(ctx(), captured("19-get_instance_diagnostics.json"))
        .await
        .unwrap();
    let d = NovaObject::from_primitive(&v).unwrap();
    assert_eq!(d.get("state"), Some(&json!("paused")));
    let mem = NovaObject::from_primitive(d.get("memory_details").unwrap()).unwrap();
    assert_eq!(mem.get("maximum"), Some(&json!(512)));
    assert_eq!(mem.get("used"), Some(&json!(64)));
}

#[tokio::test]
async fn diagnostics_of_a_missing_instance_is_instance_not_found() {
    let dir = tempfile::tempdir().unwrap();
    let m = manager(Arc::new(FakeDriver::default()), dir.path());
    let f = m
        .call(ctx(), captured("19-get_instance_diagnostics.json"))
        .await
        .unwrap_err();
    assert_eq!(f.class, "InstanceNotFound");
}

#[tokio::test]
async fn unsupported_calls_are_not_implemented() {
    let driver = FakeDriver::running();
    let dir = tempfile::tempdir().unwrap();
    let m = manager(driver.clone(), dir.path());
    let f = m
        .call(ctx(), captured("13-set_admin_password.json"))
        .await
        .unwrap_err();
    assert_eq!(f.class, "NotImplementedError");
    assert!(driver.calls().is_empty());
}

#[test]
fn restart_recovery_by_vm_and_task_state() {
    assert_eq!(recovery_for("building", None), Recovery::FailBuild);
    assert_eq!(
        recovery_for("building", Some("spawning")),
        Recovery::FailBuild
    );
    assert_eq!(
        recovery_for("active", Some("deleting")),
        Recovery::FinishDelete
    );
    assert_eq!(
        recovery_for("active", Some("powering-off")),
        Recovery::ClearTask
    );
    assert_eq!(recovery_for("stopped", None), Recovery::Nothing);
}

#[test]
fn power_sync_stops_active_instances_whose_container_is_gone() {
    let (running, shutdown, crashed, nostate) = (
        power_state::RUNNING,
        power_state::SHUTDOWN,
        power_state::CRASHED,
        power_state::NOSTATE,
    );
    for gone in [shutdown, crashed, nostate] {
        assert_eq!(
            power_sync_for("active", running, gone),
            PowerSync::StopInstance
        );
    }
    assert_eq!(
        power_sync_for("active", running, running),
        PowerSync::Nothing
    );
    // not active: only the stale power state is corrected
    assert_eq!(
        power_sync_for("stopped", running, shutdown),
        PowerSync::SavePower
    );
    assert_eq!(
        power_sync_for("stopped", shutdown, shutdown),
        PowerSync::Nothing
    );
    assert_eq!(
        power_sync_for("paused", running, power_state::PAUSED),
        PowerSync::SavePower
    );
}

#[test]
fn fault_classes_of_failed_casts() {
    let e = ComputeError::Invalid("NotImplementedError: rescue is not supported".into());
    assert_eq!(fault_class(&e, &e.full_message()), "NotImplementedError");
    let e = ComputeError::Driver(DriverError::ImageNotFound("x".into()));
    assert_eq!(fault_class(&e, &e.full_message()), "ImageNotFound");
}

#[test]
fn stop_and_reboot_parameters() {
    assert_eq!(stop_timeout(true, 60), Duration::from_secs(60));
    assert_eq!(stop_timeout(false, 60), Duration::ZERO);
    assert_eq!(
        reboot_task_states(true),
        (
            "reboot_pending_hard",
            "reboot_started_hard",
            "rebooting_hard"
        )
    );
    assert_eq!(
        reboot_task_states(false),
        ("reboot_pending", "reboot_started", "rebooting")
    );
}

/// The instance a captured message carries, as Nova would list it with
/// `vm_state`, `task_state` and `power_state` set.
fn instance_in(vm: &str, task: Option<&str>, power: i64) -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/nova-34/api-to-compute/04-start_instance.json");
    let capture: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let body: Value = serde_json::from_str(capture["body_raw"].as_str().unwrap()).unwrap();
    let msg: Value = serde_json::from_str(body["oslo.message"].as_str().unwrap()).unwrap();
    let mut inst = msg["args"]["instance"].clone();
    let data = &mut inst["nova_object.data"];
    data["vm_state"] = json!(vm);
    data["task_state"] = json!(task);
    data["power_state"] = json!(power);
    inst
}

/// A cast against an answering conductor: the driver calls and the conductor.
async fn answered_cast(
    fixture: &str,
    driver: Arc<FakeDriver>,
) -> (String, Vec<String>, Arc<FakeConductor>) {
    let dir = tempfile::tempdir().unwrap();
    let conductor = FakeConductor::answering();
    let m = manager_with(driver.clone(), conductor.clone(), dir.path());
    let call = captured(fixture);
    let uuid = uuid_of(&call);
    m.cast(ctx(), call).await;
    (uuid, driver.calls(), conductor)
}

#[tokio::test]
async fn stop_saves_stopped_and_shutdown_from_powering_off() {
    let (_, _, c) = answered_cast("03-stop_instance.json", FakeDriver::running()).await;
    assert_eq!(
        c.saves(),
        [
            json!({"power_state": 4, "vm_state": "stopped", "task_state": null, "expected": "powering-off"})
        ]
    );
    assert_eq!(
        c.events(),
        [
            json!(["start", "compute_stop_instance"]),
            json!(["finish", "compute_stop_instance", false])
        ]
    );
    assert!(c.faults().is_empty());
}

#[tokio::test]
async fn start_saves_active_and_running_from_powering_on() {
    let driver = FakeDriver::running();
    *driver.power.lock().unwrap() = Some(PowerState::Shutdown);
    let (_, _, c) = answered_cast("04-start_instance.json", driver).await;
    assert_eq!(
        c.saves(),
        [
            json!({"power_state": 1, "vm_state": "active", "task_state": null, "expected": "powering-on"})
        ]
    );
}

#[tokio::test]
async fn pause_and_suspend_save_their_own_states() {
    let (_, _, c) = answered_cast("07-pause_instance.json", FakeDriver::running()).await;
    assert_eq!(
        c.saves(),
        [
            json!({"power_state": 3, "vm_state": "paused", "task_state": null, "expected": "pausing"})
        ]
    );
    let (_, _, c) = answered_cast("09-suspend_instance.json", FakeDriver::running()).await;
    assert_eq!(
        c.saves(),
        [
            json!({"power_state": 7, "vm_state": "suspended", "task_state": null, "expected": "suspending"})
        ]
    );
}

#[tokio::test]
async fn reboot_walks_the_task_states_then_reboots() {
    let call = captured("05-reboot_instance.json");
    let ComputeCall::RebootInstance(a) = &call else {
        panic!("not reboot_instance");
    };
    let hard = a.is_hard();
    let (pending, started, expected) = reboot_task_states(hard);
    let (uuid, calls, c) = answered_cast("05-reboot_instance.json", FakeDriver::running()).await;
    assert_eq!(
        calls,
        [
            format!("get_info {uuid}"),
            format!("reboot {uuid} hard={hard} 7s"),
            format!("get_info {uuid}")
        ]
    );
    assert_eq!(
        c.saves(),
        [
            json!({"power_state": 1, "task_state": pending, "expected": expected}),
            json!({"task_state": started, "expected": pending}),
            json!({"power_state": 1, "vm_state": "active", "task_state": null, "expected": started}),
        ]
    );
}

#[tokio::test]
async fn a_failed_operation_records_a_fault_and_leaves_its_task_state() {
    let driver = FakeDriver::running();
    driver.failing.lock().unwrap().push("pause");
    let (_, _, c) = answered_cast("07-pause_instance.json", driver).await;
    let faults = c.faults();
    assert_eq!(faults.len(), 1, "{faults:?}");
    assert!(
        faults[0]["message"]
            .as_str()
            .unwrap()
            .contains("pause failed"),
        "{faults:?}"
    );
    assert_eq!(c.saves(), [json!({"task_state": null})]);
    assert_eq!(
        c.events().last(),
        Some(&json!(["finish", "compute_pause_instance", true]))
    );
}

#[tokio::test]
async fn an_unsupported_cast_is_a_not_implemented_fault() {
    let (_, calls, c) = answered_cast("12-trigger_crash_dump.json", FakeDriver::running()).await;
    assert!(calls.is_empty());
    let faults = c.faults();
    assert_eq!(faults.len(), 1, "{faults:?}");
    assert!(
        faults[0]["details"]
            .as_str()
            .unwrap()
            .starts_with("NotImplementedError: "),
        "{faults:?}"
    );
    assert_eq!(c.saves(), [json!({"task_state": null})]);
}

/// `init_host` over one instance as Nova lists it.
async fn after_restart(
    instance: Value,
    driver: Arc<FakeDriver>,
) -> (Vec<String>, Arc<FakeConductor>) {
    let dir = tempfile::tempdir().unwrap();
    let conductor = FakeConductor::answering();
    conductor.instances.lock().unwrap().push(instance);
    let m = manager_with(driver.clone(), conductor.clone(), dir.path());
    m.init_host(&ctx()).await;
    (driver.calls(), conductor)
}

#[tokio::test]
async fn a_build_interrupted_by_a_restart_ends_in_error() {
    let (calls, c) = after_restart(
        instance_in("building", Some("spawning"), 0),
        FakeDriver::running(),
    )
    .await;
    assert_eq!(calls.len(), 1);
    assert!(calls[0].starts_with("destroy "), "{calls:?}");
    let faults = c.faults();
    assert!(
        faults[0]["details"]
            .as_str()
            .unwrap()
            .starts_with("BuildAbortException: "),
        "{faults:?}"
    );
    assert_eq!(
        c.saves(),
        [json!({"vm_state": "error", "task_state": null})]
    );
}

#[tokio::test]
async fn other_interrupted_tasks_are_cleared_with_the_power_state() {
    let (calls, c) = after_restart(
        instance_in("active", Some("powering-off"), 1),
        FakeDriver::running(),
    )
    .await;
    assert_eq!(calls.len(), 1);
    assert!(calls[0].starts_with("get_info "), "{calls:?}");
    assert_eq!(c.saves(), [json!({"task_state": null, "power_state": 1})]);
    let (calls, c) = after_restart(instance_in("active", None, 1), FakeDriver::running()).await;
    assert!(calls.is_empty(), "{calls:?}");
    assert!(c.saves().is_empty());
}

/// The power-state sync over one instance as Nova lists it.
async fn synced(instance: Value, driver: Arc<FakeDriver>) -> (Vec<String>, Arc<FakeConductor>) {
    let dir = tempfile::tempdir().unwrap();
    let conductor = FakeConductor::answering();
    conductor.instances.lock().unwrap().push(instance);
    let m = manager_with(driver.clone(), conductor.clone(), dir.path());
    m.sync_power_states(&ctx()).await;
    (driver.calls(), conductor)
}

#[tokio::test]
async fn an_active_instance_whose_container_is_gone_is_stopped() {
    let (calls, c) = synced(
        instance_in("active", None, 1),
        Arc::new(FakeDriver::default()),
    )
    .await;
    assert_eq!(calls.len(), 2, "{calls:?}");
    assert!(calls[1].ends_with(" 0s force=true"), "{calls:?}");
    assert_eq!(
        c.saves(),
        [json!({"power_state": 4, "vm_state": "stopped", "task_state": null, "expected": null})]
    );
}

#[tokio::test]
async fn power_sync_corrects_stale_power_states_and_skips_busy_instances() {
    let driver = FakeDriver::running();
    *driver.power.lock().unwrap() = Some(PowerState::Shutdown);
    let (_, c) = synced(instance_in("stopped", None, 1), driver).await;
    assert_eq!(c.saves(), [json!({"power_state": 4})]);
    let (calls, c) = synced(
        instance_in("active", Some("pausing"), 1),
        Arc::new(FakeDriver::default()),
    )
    .await;
    assert!(calls.is_empty(), "{calls:?}");
    assert!(c.saves().is_empty());
}

/// A dispatch that waits (here on the driver) leaves its `rpc` span when it
/// yields: a span held entered across an await stayed current on the thread,
/// so every later message's span nested inside it and none was ever closed.
#[tokio::test(flavor = "current_thread")]
async fn a_waiting_dispatch_leaves_no_span_entered() {
    use crate::rpc::Endpoint;
    let _sub = tracing::subscriber::set_default(tracing_subscriber::registry());
    let driver = FakeDriver::running();
    *driver.delay.lock().unwrap() = Duration::from_millis(50);
    let dir = tempfile::tempdir().unwrap();
    let m = Arc::new(manager(driver.clone(), dir.path()));
    let endpoint = ComputeEndpoint::new(m, Arc::new(crate::compute::casts::CastRunner::new(4)));
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/nova-34/api-to-compute/03-stop_instance.json");
    let capture: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let body: Value = serde_json::from_str(capture["body_raw"].as_str().unwrap()).unwrap();
    let mut msg: Map<String, Value> =
        serde_json::from_str(body["oslo.message"].as_str().unwrap()).unwrap();
    msg.insert("_msg_id".into(), json!("m1"));
    let request = Request::from_message(msg, "compute");
    let mut dispatch = Box::pin(endpoint.dispatch(request));
    assert!(futures::poll!(dispatch.as_mut()).is_pending());
    assert!(
        tracing::Span::current().is_none(),
        "the rpc span stayed entered: {:?}",
        tracing::Span::current()
    );
    dispatch.await.unwrap();
    assert!(driver.calls().iter().any(|c| c.starts_with("power_off")));
}

/// A quiet instance costs the pass one look at its container and no call:
/// the refresh under the lock is only for an instance that needs a change.
#[tokio::test]
async fn power_sync_reads_again_only_the_instances_it_changes() {
    let refreshes = |c: &FakeConductor| c.log().iter().filter(|e| e["op"] == "refresh").count();
    let (calls, c) = synced(instance_in("active", None, 1), FakeDriver::running()).await;
    assert_eq!(calls.len(), 1, "{calls:?}");
    assert_eq!(refreshes(&c), 0);
    assert!(c.saves().is_empty());
    let driver = FakeDriver::running();
    *driver.power.lock().unwrap() = Some(PowerState::Shutdown);
    let (_, c) = synced(instance_in("stopped", None, 1), driver).await;
    assert_eq!(refreshes(&c), 1);
    assert_eq!(c.saves(), [json!({"power_state": 4})]);
}

#[path = "manager_net_tests.rs"]
mod net_tests;

#[tokio::test]
async fn cache_images_answers_each_image_as_nova_compute_does() {
    let dir = tempfile::tempdir().unwrap();
    let args = json!({"image_ids": ["img-a", "img-b"]});
    let call = ComputeCall::decode("cache_images", args.as_object().unwrap())
        .unwrap()
        .unwrap();
    // in the cache already
    let driver = Arc::new(FakeDriver::default());
    *driver.cached_images.lock().unwrap() = true;
    let m = manager(driver.clone(), dir.path());
    let got = m.call(ctx(), call.clone()).await.unwrap();
    assert_eq!(got, json!({"img-a": "existing", "img-b": "existing"}));
    assert!(driver
        .calls()
        .contains(&"get_image glance/img-b".to_string()));
    // not cached, and no Glance to fetch from: an error per image, not a failed call
    let driver = Arc::new(FakeDriver::default());
    let m = manager(driver, dir.path());
    let got = m.call(ctx(), call).await.unwrap();
    assert_eq!(got, json!({"img-a": "error", "img-b": "error"}));
}

#[path = "manager_shelve_tests.rs"]
mod shelve_rescue;
