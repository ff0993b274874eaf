//! LeaveGroup (key 13): members leave at once instead of waiting out their session; v3+
//! batches several members, by member id or group.instance.id (KIP-345).

use kafka_protocol::messages::leave_group_response::MemberResponse;
use kafka_protocol::messages::{LeaveGroupRequest, LeaveGroupResponse};
use kafka_protocol::protocol::StrBytes;

use super::RequestContext;
use crate::broker::Broker;
use crate::group::{ErrorCode, LeavingMember};

pub async fn handle(
    broker: &Broker,
    ctx: &RequestContext,
    req: LeaveGroupRequest,
) -> LeaveGroupResponse {
    if !broker.is_group_coordinator() {
        return LeaveGroupResponse::default().with_error_code(super::code::NOT_COORDINATOR);
    }
    let batched = ctx.version >= 3;
    let members = if batched {
        req.members
            .into_iter()
            .map(|m| LeavingMember {
                member_id: m.member_id.to_string(),
                group_instance_id: m.group_instance_id.map(|i| i.to_string()),
            })
            .collect()
    } else {
        vec![LeavingMember {
            member_id: req.member_id.to_string(),
            group_instance_id: None,
        }]
    };
    let r = broker.groups.leave(&req.group_id.0, members);
    if !batched {
        // v0-2 have one member and one error: the member's, unless the group's is set.
        let member_error = r.members.first().map_or(ErrorCode::None, |(_, e)| *e);
        let error = if r.error == ErrorCode::None {
            member_error
        } else {
            r.error
        };
        return LeaveGroupResponse::default().with_error_code(error.code());
    }
    LeaveGroupResponse::default()
        .with_error_code(r.error.code())
        .with_members(
            r.members
                .into_iter()
                .map(|(m, e)| {
                    MemberResponse::default()
                        .with_member_id(StrBytes::from_string(m.member_id))
                        .with_group_instance_id(m.group_instance_id.map(StrBytes::from_string))
                        .with_error_code(e.code())
                })
                .collect(),
        )
}
