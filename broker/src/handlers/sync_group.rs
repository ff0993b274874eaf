//! SyncGroup (key 14): the leader hands in every member's assignment; each member waits for
//! its own. Assignments are relayed as bytes, never interpreted.

use kafka_protocol::messages::{SyncGroupRequest, SyncGroupResponse};
use kafka_protocol::protocol::StrBytes;

use super::RequestContext;
use crate::broker::Broker;
use crate::group;

pub async fn handle(
    broker: &Broker,
    _: &RequestContext,
    req: SyncGroupRequest,
) -> SyncGroupResponse {
    if !broker.is_group_coordinator() {
        return SyncGroupResponse::default().with_error_code(super::code::NOT_COORDINATOR);
    }
    let sync = group::SyncRequest {
        group_id: req.group_id.0.to_string(),
        generation_id: req.generation_id,
        member_id: req.member_id.to_string(),
        group_instance_id: req.group_instance_id.map(|i| i.to_string()),
        protocol_type: req.protocol_type.map(|p| p.to_string()),
        protocol_name: req.protocol_name.map(|p| p.to_string()),
        assignments: req
            .assignments
            .into_iter()
            .map(|a| (a.member_id.to_string(), a.assignment))
            .collect(),
    };
    let r = broker.groups.sync(sync).await;
    SyncGroupResponse::default()
        .with_error_code(r.error.code())
        .with_protocol_type(r.protocol_type.map(StrBytes::from_string))
        .with_protocol_name(r.protocol_name.map(StrBytes::from_string))
        .with_assignment(r.assignment)
}
