//! FindCoordinator (key 10): this single node coordinates every group; transactions are refused.

use kafka_protocol::messages::{BrokerId, FindCoordinatorRequest, FindCoordinatorResponse};
use kafka_protocol::protocol::StrBytes;

use super::{code, RequestContext};
use crate::broker::Broker;

/// Key type 0 is a consumer group, 1 a transactional id (KIP-98).
const KEY_TYPE_GROUP: i8 = 0;
const KEY_TYPE_TRANSACTION: i8 = 1;

pub async fn handle(
    broker: &Broker,
    ctx: &RequestContext,
    req: FindCoordinatorRequest,
) -> FindCoordinatorResponse {
    let refuse = |error: i16, message: &'static str| {
        let resp = FindCoordinatorResponse::default()
            .with_error_code(error)
            .with_node_id(BrokerId(-1))
            .with_port(-1);
        // The error message is a v1+ field.
        if ctx.version >= 1 {
            resp.with_error_message(Some(StrBytes::from_static_str(message)))
        } else {
            resp
        }
    };
    match req.key_type {
        // Cluster mode: the metadata leader coordinates every group (its state is not yet
        // replicated: a failover starts groups afresh on the new leader, see ARCHITECTURE.md).
        KEY_TYPE_GROUP if broker.cluster().is_some() => {
            let node = broker.cluster().and_then(|cluster| {
                let id = cluster.controller()?;
                cluster.brokers().into_iter().find(|(n, _, _)| *n == id)
            });
            match node {
                Some((id, host, port)) => FindCoordinatorResponse::default()
                    .with_node_id(BrokerId(id))
                    .with_host(StrBytes::from_string(host))
                    .with_port(i32::from(port)),
                None => refuse(code::COORDINATOR_NOT_AVAILABLE, "no metadata leader yet"),
            }
        }
        KEY_TYPE_GROUP => FindCoordinatorResponse::default()
            .with_node_id(BrokerId(broker.node_id()))
            .with_host(StrBytes::from_string(broker.config.advertised_host()))
            .with_port(i32::from(broker.config.advertised_port())),
        // A clear, immediate and non-retriable error: clients stop instead of looping.
        KEY_TYPE_TRANSACTION => refuse(
            code::TRANSACTIONAL_ID_AUTHORIZATION_FAILED,
            "transactions are not supported by Runnel",
        ),
        _ => refuse(code::INVALID_REQUEST, "unknown coordinator key type"),
    }
}
