//! Heartbeat (key 12): keeps a group member's session alive and tells it when to rejoin.

use kafka_protocol::messages::{HeartbeatRequest, HeartbeatResponse};

use super::RequestContext;
use crate::broker::Broker;
use crate::group;

pub async fn handle(
    broker: &Broker,
    _: &RequestContext,
    req: HeartbeatRequest,
) -> HeartbeatResponse {
    if !broker.is_group_coordinator() {
        return HeartbeatResponse::default().with_error_code(super::code::NOT_COORDINATOR);
    }
    let error = broker.groups.heartbeat(group::HeartbeatRequest {
        group_id: req.group_id.0.to_string(),
        generation_id: req.generation_id,
        member_id: req.member_id.to_string(),
        group_instance_id: req.group_instance_id.map(|i| i.to_string()),
    });
    HeartbeatResponse::default().with_error_code(error.code())
}
