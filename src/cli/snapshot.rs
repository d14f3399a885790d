//! `corral snapshot create|list|restore|delete`: the client side of the
//! snapshot endpoints.

use clap::Subcommand;

use super::client::Client;
use super::{human_bytes, json, percent_path, print, table, Format};
use crate::api::types::{InstancePut, PublishPost, Snapshot, SnapshotTaken, SnapshotsPost};

#[derive(Debug, Subcommand)]
pub enum SnapshotCommand {
    /// Take a consistent snapshot of an instance's root (a running instance
    /// is frozen for the copy of its writable layer, then thawed).
    Create { instance: String, snapshot: String },
    /// List an instance's snapshots, oldest first.
    List { instance: String },
    /// Bring a stopped instance's root back to one of its snapshots.
    Restore { instance: String, snapshot: String },
    /// Delete a snapshot.
    Delete { instance: String, snapshot: String },
}

pub(super) fn run(c: &Client, f: Format, cmd: &SnapshotCommand) -> anyhow::Result<()> {
    let base = |i: &str| format!("/1.0/instances/{}", percent_path(i));
    match cmd {
        SnapshotCommand::Create { instance, snapshot } => {
            let body = SnapshotsPost {
                name: snapshot.clone(),
            };
            let op = c.run(
                "POST",
                &format!("{}/snapshots", base(instance)),
                Some(&json(&body)?),
            )?;
            let taken: SnapshotTaken = serde_json::from_value(op.metadata.unwrap_or_default())
                .map_err(|e| anyhow::anyhow!("unexpected snapshot answer: {e}"))?;
            print(f, &taken, |t| {
                format!(
                    "Snapshot {} of {instance} taken ({}{})\n",
                    t.snapshot.name,
                    human_bytes(t.snapshot.size.max(0) as u64),
                    t.pause_ms
                        .map(|p| format!(", paused {p:.1} ms"))
                        .unwrap_or_default()
                )
            })?;
        }
        SnapshotCommand::List { instance } => {
            let list: Vec<Snapshot> =
                c.get(&format!("{}/snapshots?recursion=1", base(instance)))?;
            print(f, &list, |l| {
                table(
                    &["NAME", "CREATED", "SIZE", "IMAGE"],
                    l.iter()
                        .map(|s| {
                            vec![
                                s.name.clone(),
                                s.created_at.clone(),
                                human_bytes(s.size.max(0) as u64),
                                s.image[..s.image.len().min(12)].to_string(),
                            ]
                        })
                        .collect(),
                )
            })?;
        }
        SnapshotCommand::Restore { instance, snapshot } => {
            let body = InstancePut {
                restore: snapshot.clone(),
            };
            c.run("PUT", &base(instance), Some(&json(&body)?))?;
        }
        SnapshotCommand::Delete { instance, snapshot } => {
            c.run(
                "DELETE",
                &format!("{}/snapshots/{}", base(instance), percent_path(snapshot)),
                None,
            )?;
        }
    }
    Ok(())
}

/// `corral publish INSTANCE [--alias NAME]`.
pub(super) fn publish(
    c: &Client,
    f: Format,
    instance: &str,
    alias: &Option<String>,
) -> anyhow::Result<()> {
    let body = PublishPost {
        alias: alias.clone(),
    };
    let op = c.run(
        "POST",
        &format!("/1.0/instances/{}/publish", percent_path(instance)),
        Some(&json(&body)?),
    )?;
    let img = op.metadata.unwrap_or_default();
    print(f, &img, |i| {
        format!(
            "Published {instance} as {}{}\n",
            i["fingerprint"].as_str().unwrap_or_default(),
            i["alias"]
                .as_str()
                .map(|a| format!(" ({a})"))
                .unwrap_or_default()
        )
    })
}
