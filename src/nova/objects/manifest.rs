//! The object version manifest of nova 34.0.0.
//!
//! A compute sends `object_versions` (oslo `obj_tree_get_versions(objname)`) with every
//! `object_class_action_versions` call and `object_backport_versions`; the conductor
//! backports what it returns to these versions. [`object_tree_versions`] reproduces
//! oslo's map, order included (checked against every captured call).

use serde_json::{Map, Value};

/// Every object nova 34.0.0 registers (`@NovaObjectRegistry.register` in
/// `nova/objects/*.py`) and its `VERSION`, sorted by name. Read from the released source
/// with a script (AST of each class, inherited `VERSION` for `QuotasNoOp`).
pub const NOVA_34_OBJECT_VERSIONS: &[(&str, &str)] = &[
    ("Aggregate", "1.3"),
    ("AggregateList", "1.3"),
    ("BlockDeviceMapping", "1.21"),
    ("BlockDeviceMappingList", "1.18"),
    ("BuildRequest", "1.3"),
    ("BuildRequestList", "1.0"),
    ("CellMapping", "1.1"),
    ("CellMappingList", "1.1"),
    ("ComputeNode", "1.19"),
    ("ComputeNodeList", "1.17"),
    ("ConsoleAuthToken", "1.3"),
    ("CpuDiagnostics", "1.0"),
    ("Destination", "1.4"),
    ("DeviceBus", "1.0"),
    ("DeviceMetadata", "1.0"),
    ("Diagnostics", "1.0"),
    ("DiskDiagnostics", "1.0"),
    ("DiskMetadata", "1.0"),
    ("EC2Ids", "1.0"),
    ("EC2InstanceMapping", "1.0"),
    ("Flavor", "1.2"),
    ("FlavorList", "1.1"),
    ("HVSpec", "1.2"),
    ("HostMapping", "1.0"),
    ("HostMappingList", "1.1"),
    ("HyperVLiveMigrateData", "1.5"),
    ("IDEDeviceBus", "1.0"),
    ("ImageMeta", "1.8"),
    ("ImageMetaProps", "1.44"),
    ("Instance", "2.8"),
    ("InstanceAction", "1.2"),
    ("InstanceActionEvent", "1.4"),
    ("InstanceActionEventList", "1.1"),
    ("InstanceActionList", "1.1"),
    ("InstanceDeviceMetadata", "1.0"),
    ("InstanceExternalEvent", "1.5"),
    ("InstanceFault", "1.2"),
    ("InstanceFaultList", "1.2"),
    ("InstanceGroup", "1.11"),
    ("InstanceGroupList", "1.8"),
    ("InstanceInfoCache", "1.5"),
    ("InstanceList", "2.6"),
    ("InstanceMapping", "1.2"),
    ("InstanceMappingList", "1.3"),
    ("InstanceNUMACell", "1.6"),
    ("InstanceNUMATopology", "1.3"),
    ("InstancePCIRequest", "1.4"),
    ("InstancePCIRequests", "1.1"),
    ("KeyPair", "1.4"),
    ("KeyPairList", "1.3"),
    ("LibvirtLiveMigrateBDMInfo", "1.1"),
    ("LibvirtLiveMigrateData", "1.14"),
    ("LibvirtLiveMigrateNUMAInfo", "1.0"),
    ("LibvirtVPMEMDevice", "1.0"),
    ("MemoryDiagnostics", "1.0"),
    ("Migration", "1.8"),
    ("MigrationContext", "1.2"),
    ("MigrationList", "1.5"),
    ("MonitorMetric", "1.1"),
    ("MonitorMetricList", "1.1"),
    ("NUMACell", "1.5"),
    ("NUMAPagesTopology", "1.1"),
    ("NUMATopology", "1.2"),
    ("NUMATopologyLimits", "1.1"),
    ("NetworkInterfaceMetadata", "1.2"),
    ("NetworkMetadata", "1.0"),
    ("NetworkRequest", "1.3"),
    ("NetworkRequestList", "1.1"),
    ("NicDiagnostics", "1.0"),
    ("PCIDeviceBus", "1.0"),
    ("PciDevice", "1.7"),
    ("PciDeviceList", "1.3"),
    ("PciDevicePool", "1.1"),
    ("PciDevicePoolList", "1.1"),
    ("Quotas", "1.3"),
    ("QuotasNoOp", "1.3"),
    ("RequestGroup", "1.3"),
    ("RequestLevelParams", "1.1"),
    ("RequestSpec", "1.15"),
    ("Resource", "1.0"),
    ("ResourceList", "1.0"),
    ("ResourceMetadata", "1.0"),
    ("S3ImageMapping", "1.0"),
    ("SCSIDeviceBus", "1.0"),
    ("SchedulerLimits", "1.0"),
    ("SchedulerRetries", "1.1"),
    ("SecurityGroup", "1.2"),
    ("SecurityGroupList", "1.1"),
    ("Selection", "1.1"),
    ("Service", "1.22"),
    ("ServiceList", "1.19"),
    ("ShareMapping", "1.2"),
    ("ShareMappingList", "1.1"),
    ("ShareMetadata", "1.0"),
    ("Tag", "1.1"),
    ("TagList", "1.1"),
    ("TaskLog", "1.0"),
    ("TaskLogList", "1.0"),
    ("TrustedCerts", "1.0"),
    ("USBDeviceBus", "1.0"),
    ("VIFMigrateData", "1.0"),
    ("VMwareLiveMigrateData", "1.1"),
    ("VirtCPUFeature", "1.0"),
    ("VirtCPUModel", "1.0"),
    ("VirtCPUTopology", "1.0"),
    ("VirtualInterface", "1.3"),
    ("VirtualInterfaceList", "1.0"),
    ("VolumeUsage", "1.0"),
    ("XenDeviceBus", "1.0"),
];

/// For each object with `ObjectField`/`ListOfObjectsField` fields, the child object
/// names in field order (own fields first, then inherited ones, as oslo's
/// `_make_class_properties` orders them). Drives [`object_tree_versions`].
pub(crate) const OBJECT_CHILDREN: &[(&str, &[&str])] = &[
    ("AggregateList", &["Aggregate"]),
    ("BlockDeviceMapping", &["Instance"]),
    ("BlockDeviceMappingList", &["BlockDeviceMapping"]),
    (
        "BuildRequest",
        &["Instance", "BlockDeviceMappingList", "TagList"],
    ),
    ("BuildRequestList", &["BuildRequest"]),
    ("CellMappingList", &["CellMapping"]),
    ("ComputeNode", &["HVSpec", "PciDevicePoolList"]),
    ("ComputeNodeList", &["ComputeNode"]),
    ("Destination", &["CellMapping"]),
    ("DeviceMetadata", &["DeviceBus"]),
    (
        "Diagnostics",
        &[
            "MemoryDiagnostics",
            "CpuDiagnostics",
            "NicDiagnostics",
            "DiskDiagnostics",
        ],
    ),
    ("DiskMetadata", &["DeviceBus"]),
    ("FlavorList", &["Flavor"]),
    ("HostMapping", &["CellMapping"]),
    ("HostMappingList", &["HostMapping"]),
    ("HyperVLiveMigrateData", &["Migration", "VIFMigrateData"]),
    ("ImageMeta", &["ImageMetaProps"]),
    (
        "Instance",
        &[
            "ServiceList",
            "InstanceInfoCache",
            "SecurityGroupList",
            "InstanceFault",
            "PciDeviceList",
            "InstanceNUMATopology",
            "InstancePCIRequests",
            "InstanceDeviceMetadata",
            "TagList",
            "Flavor",
            "Flavor",
            "Flavor",
            "VirtCPUModel",
            "EC2Ids",
            "MigrationContext",
            "KeyPairList",
            "TrustedCerts",
            "ResourceList",
        ],
    ),
    ("InstanceActionEventList", &["InstanceActionEvent"]),
    ("InstanceActionList", &["InstanceAction"]),
    ("InstanceDeviceMetadata", &["DeviceMetadata"]),
    ("InstanceFaultList", &["InstanceFault"]),
    ("InstanceGroupList", &["InstanceGroup"]),
    ("InstanceList", &["Instance"]),
    ("InstanceMapping", &["CellMapping"]),
    ("InstanceMappingList", &["InstanceMapping"]),
    ("InstanceNUMACell", &["VirtCPUTopology"]),
    ("InstanceNUMATopology", &["InstanceNUMACell"]),
    ("InstancePCIRequests", &["InstancePCIRequest"]),
    ("KeyPairList", &["KeyPair"]),
    (
        "LibvirtLiveMigrateData",
        &[
            "LibvirtLiveMigrateBDMInfo",
            "LibvirtLiveMigrateNUMAInfo",
            "Migration",
            "VIFMigrateData",
        ],
    ),
    (
        "MigrationContext",
        &[
            "InstanceNUMATopology",
            "InstanceNUMATopology",
            "PciDeviceList",
            "PciDeviceList",
            "InstancePCIRequests",
            "InstancePCIRequests",
            "ResourceList",
            "ResourceList",
        ],
    ),
    ("MigrationList", &["Migration"]),
    ("MonitorMetricList", &["MonitorMetric"]),
    ("NUMACell", &["NUMAPagesTopology", "NetworkMetadata"]),
    ("NUMATopology", &["NUMACell"]),
    ("NUMATopologyLimits", &["NetworkMetadata"]),
    ("NetworkInterfaceMetadata", &["DeviceBus"]),
    ("NetworkRequestList", &["NetworkRequest"]),
    ("PciDeviceList", &["PciDevice"]),
    ("PciDevicePoolList", &["PciDevicePool"]),
    (
        "RequestSpec",
        &[
            "ImageMeta",
            "InstanceNUMATopology",
            "InstancePCIRequests",
            "Flavor",
            "Destination",
            "SchedulerRetries",
            "SchedulerLimits",
            "InstanceGroup",
            "SecurityGroupList",
            "NetworkMetadata",
            "RequestGroup",
            "RequestLevelParams",
            "NetworkRequestList",
        ],
    ),
    ("Resource", &["ResourceMetadata"]),
    ("ResourceList", &["Resource"]),
    ("SchedulerLimits", &["NUMATopologyLimits"]),
    ("SchedulerRetries", &["ComputeNodeList"]),
    ("SecurityGroupList", &["SecurityGroup"]),
    ("Selection", &["SchedulerLimits"]),
    ("Service", &["ComputeNode"]),
    ("ServiceList", &["Service"]),
    ("ShareMappingList", &["ShareMapping"]),
    ("ShareMetadata", &["DeviceBus"]),
    ("TagList", &["Tag"]),
    ("TaskLogList", &["TaskLog"]),
    ("VMwareLiveMigrateData", &["Migration", "VIFMigrateData"]),
    ("VirtCPUModel", &["VirtCPUTopology", "VirtCPUFeature"]),
    ("VirtualInterfaceList", &["VirtualInterface"]),
];

/// The version string nova 34 implements for `name`, if registered.
pub fn nova34_version_str(name: &str) -> Option<&'static str> {
    let idx = NOVA_34_OBJECT_VERSIONS
        .binary_search_by(|(n, _)| (*n).cmp(name))
        .ok()?;
    Some(NOVA_34_OBJECT_VERSIONS[idx].1)
}

fn children(name: &str) -> &'static [&'static str] {
    OBJECT_CHILDREN
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, c)| *c)
        .unwrap_or(&[])
}

/// oslo `obj_tree_get_versions(name)`: `name` and every object reachable through its
/// object fields, depth first, each with nova 34's version. `None` for an unknown name.
pub fn object_tree_versions(name: &str) -> Option<Vec<(&'static str, &'static str)>> {
    fn walk(name: &str, out: &mut Vec<(&'static str, &'static str)>) -> bool {
        if out.iter().any(|(n, _)| *n == name) {
            return true;
        }
        let Ok(idx) = NOVA_34_OBJECT_VERSIONS.binary_search_by(|(n, _)| (*n).cmp(name)) else {
            return false;
        };
        out.push(NOVA_34_OBJECT_VERSIONS[idx]);
        children(name).iter().all(|child| walk(child, out))
    }
    let mut out = Vec::new();
    walk(name, &mut out).then_some(out)
}

/// [`object_tree_versions`] as the JSON map sent in `object_versions`.
pub fn object_versions_arg(name: &str) -> Option<Map<String, Value>> {
    Some(
        object_tree_versions(name)?
            .into_iter()
            .map(|(n, v)| (n.to_string(), Value::String(v.to_string())))
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_is_sorted_and_parses() {
        assert!(NOVA_34_OBJECT_VERSIONS.windows(2).all(|w| w[0].0 < w[1].0));
        for (name, v) in NOVA_34_OBJECT_VERSIONS {
            let parts: Vec<&str> = v.split('.').collect();
            assert!(
                parts.len() == 2 && parts.iter().all(|p| p.parse::<u32>().is_ok()),
                "{name}"
            );
        }
        for (name, kids) in OBJECT_CHILDREN {
            assert!(nova34_version_str(name).is_some());
            for k in *kids {
                assert!(nova34_version_str(k).is_some(), "{name} -> {k}");
            }
        }
        assert_eq!(nova34_version_str("ImageMetaProps"), Some("1.44"));
    }

    #[test]
    fn tree_matches_what_nova_sends_for_service() {
        let tree = object_tree_versions("Service").unwrap();
        assert_eq!(
            tree,
            vec![
                ("Service", "1.22"),
                ("ComputeNode", "1.19"),
                ("HVSpec", "1.2"),
                ("PciDevicePoolList", "1.1"),
                ("PciDevicePool", "1.1"),
            ]
        );
        assert!(object_tree_versions("Nope").is_none());
    }
}
