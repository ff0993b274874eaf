//! `runnel topics create|list|describe|delete` over the gRPC Admin service; results are
//! printed as JSON lines on stdout.

use std::collections::{BTreeMap, HashMap};

use clap::{Args, Subcommand};
use runnel_client::v1;
use serde::Serialize;

use super::{client_error, note, print_line, GrpcArgs};

#[derive(Debug, Args)]
pub struct TopicsArgs {
    #[command(flatten)]
    pub grpc: GrpcArgs,
    #[command(subcommand)]
    pub command: TopicsCommand,
}

#[derive(Debug, Subcommand)]
pub enum TopicsCommand {
    /// Create a topic and print its description
    Create {
        name: String,
        /// Partition count [default: the broker's default]
        #[arg(short, long)]
        partitions: Option<i32>,
        /// Topic config KEY=VALUE (e.g. retention.ms=86400000); repeatable
        #[arg(short, long = "config", value_name = "KEY=VALUE", value_parser = parse_key_value)]
        configs: Vec<(String, String)>,
    },
    /// List topics, one JSON object per line
    List,
    /// Print a topic's partitions, offsets and configs
    Describe { name: String },
    /// Delete a topic and its data
    Delete { name: String },
}

fn parse_key_value(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_owned(), v.to_owned())),
        _ => Err(format!("expected KEY=VALUE, got {s:?}")),
    }
}

#[derive(Serialize)]
struct PartitionJson {
    partition: i32,
    log_start: i64,
    high_watermark: i64,
    log_end: i64,
}

#[derive(Serialize)]
struct DescriptionJson<'a> {
    name: &'a str,
    id: &'a str,
    partitions: Vec<PartitionJson>,
    configs: BTreeMap<&'a String, &'a String>,
}

#[derive(Serialize)]
struct SummaryJson<'a> {
    name: &'a str,
    id: &'a str,
    partitions: i32,
}

fn description_line(d: &v1::TopicDescription) -> String {
    let json = DescriptionJson {
        name: &d.name,
        id: &d.id,
        partitions: d
            .partitions
            .iter()
            .map(|p| PartitionJson {
                partition: p.partition,
                log_start: p.log_start,
                high_watermark: p.high_watermark,
                log_end: p.log_end,
            })
            .collect(),
        configs: d.configs.iter().collect(),
    };
    serde_json::to_string(&json).unwrap_or_default()
}

pub async fn run(args: TopicsArgs) -> anyhow::Result<()> {
    let client = args.grpc.connect().await?;
    let mut admin = client.admin();
    match args.command {
        TopicsCommand::Create {
            name,
            partitions,
            configs,
        } => {
            let d = admin
                .create_topic(v1::CreateTopicRequest {
                    name,
                    partitions: partitions.unwrap_or(0),
                    configs: configs.into_iter().collect::<HashMap<_, _>>(),
                })
                .await
                .map_err(|s| client_error(s.into()))?
                .into_inner();
            print_line(&description_line(&d))?;
        }
        TopicsCommand::List => {
            let list = admin
                .list_topics(v1::ListTopicsRequest {})
                .await
                .map_err(|s| client_error(s.into()))?
                .into_inner();
            for t in &list.topics {
                let line = SummaryJson {
                    name: &t.name,
                    id: &t.id,
                    partitions: t.partitions,
                };
                if !print_line(&serde_json::to_string(&line).unwrap_or_default())? {
                    break;
                }
            }
        }
        TopicsCommand::Describe { name } => {
            let d = admin
                .describe_topic(v1::DescribeTopicRequest { name })
                .await
                .map_err(|s| client_error(s.into()))?
                .into_inner();
            print_line(&description_line(&d))?;
        }
        TopicsCommand::Delete { name } => {
            admin
                .delete_topic(v1::DeleteTopicRequest { name: name.clone() })
                .await
                .map_err(|s| client_error(s.into()))?;
            note(&format!("deleted topic {name:?}"));
        }
    }
    Ok(())
}
