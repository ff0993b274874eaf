//! JoinGroup (key 11): a member joins (or rejoins) a group and waits for the rebalance to
//! complete; the leader receives every member's protocol metadata, relayed as bytes.

use std::net::IpAddr;

use kafka_protocol::messages::join_group_response::JoinGroupResponseMember;
use kafka_protocol::messages::{JoinGroupRequest, JoinGroupResponse};
use kafka_protocol::protocol::StrBytes;

use super::RequestContext;
use crate::broker::Broker;
use crate::group::{self, Protocol};

pub async fn handle(
    broker: &Broker,
    ctx: &RequestContext,
    req: JoinGroupRequest,
) -> JoinGroupResponse {
    if !broker.is_group_coordinator() {
        return JoinGroupResponse::default().with_error_code(super::code::NOT_COORDINATOR);
    }
    let join = group::JoinRequest {
        group_id: req.group_id.0.to_string(),
        member_id: req.member_id.to_string(),
        group_instance_id: req.group_instance_id.map(|i| i.to_string()),
        client_id: ctx.client_id.clone().unwrap_or_default(),
        client_host: ctx.peer.map(|p| client_host(p.ip())).unwrap_or_default(),
        session_timeout_ms: req.session_timeout_ms,
        // v0 has no rebalance timeout (-1 when decoded): the coordinator uses the session's.
        rebalance_timeout_ms: req.rebalance_timeout_ms,
        protocol_type: req.protocol_type.to_string(),
        protocols: req
            .protocols
            .into_iter()
            .map(|p| Protocol {
                name: p.name.to_string(),
                metadata: p.metadata,
            })
            .collect(),
        // KIP-394: from v4 a new member first learns its id and joins again with it.
        require_known_member_id: ctx.version >= 4,
    };
    let r = broker.groups.join(join).await;
    // The protocol name is nullable only from v7; older clients get an empty string.
    let protocol_name = match r.protocol_name {
        None if ctx.version < 7 => Some(StrBytes::default()),
        name => name.map(StrBytes::from_string),
    };
    JoinGroupResponse::default()
        .with_error_code(r.error.code())
        .with_generation_id(r.generation_id)
        .with_protocol_type(r.protocol_type.map(StrBytes::from_string))
        .with_protocol_name(protocol_name)
        .with_leader(StrBytes::from_string(r.leader))
        .with_member_id(StrBytes::from_string(r.member_id))
        .with_members(
            r.members
                .into_iter()
                .map(|m| {
                    JoinGroupResponseMember::default()
                        .with_member_id(StrBytes::from_string(m.member_id))
                        .with_group_instance_id(m.group_instance_id.map(StrBytes::from_string))
                        .with_metadata(m.metadata)
                })
                .collect(),
        )
}

/// The member's host as Kafka reports it in DescribeGroups: `"/" + InetAddress.toString()` of
/// the connection's peer, i.e. `/127.0.0.1`, or for IPv6 Java's uncompressed form
/// (`/0:0:0:0:0:0:0:1`). An IPv4-mapped IPv6 peer is reported as IPv4, as Java does.
fn client_host(ip: IpAddr) -> String {
    match ip.to_canonical() {
        IpAddr::V4(v4) => format!("/{v4}"),
        IpAddr::V6(v6) => {
            let groups: Vec<String> = v6.segments().iter().map(|s| format!("{s:x}")).collect();
            format!("/{}", groups.join(":"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_host_is_formatted_as_kafka_does() {
        let v4: IpAddr = "127.0.0.1".parse().unwrap();
        assert_eq!(client_host(v4), "/127.0.0.1");
        let v6: IpAddr = "::1".parse().unwrap();
        assert_eq!(client_host(v6), "/0:0:0:0:0:0:0:1");
        let mapped: IpAddr = "::ffff:10.1.2.3".parse().unwrap();
        assert_eq!(client_host(mapped), "/10.1.2.3");
        let v6: IpAddr = "fe80::1:abcd".parse().unwrap();
        assert_eq!(client_host(v6), "/fe80:0:0:0:0:0:1:abcd");
    }
}
