//! InitProducerId (key 22): ids and epochs for idempotent producers. Transactions are not
//! supported: a transactional id gets TRANSACTIONAL_ID_AUTHORIZATION_FAILED at once, which
//! clients treat as fatal with a clear message, instead of a retry loop.

use kafka_protocol::messages::{InitProducerIdRequest, InitProducerIdResponse, ProducerId};

use super::{code, RequestContext};
use crate::broker::Broker;
use crate::producer_ids::RESERVED_START;

pub async fn handle(
    broker: &Broker,
    _: &RequestContext,
    req: InitProducerIdRequest,
) -> InitProducerIdResponse {
    let resp = InitProducerIdResponse::default()
        .with_producer_id(ProducerId(-1))
        .with_producer_epoch(-1);
    if req.transactional_id.is_some() {
        return resp.with_error_code(code::TRANSACTIONAL_ID_AUTHORIZATION_FAILED);
    }
    // KIP-360 (v3+): a producer that still has an id may ask for its epoch to be bumped. Not
    // an id reserved for a pipeline's outputs: bumping it would fence the pipeline's epoch-0
    // writes, so such a request gets a fresh id instead (as Kafka answers every
    // non-transactional InitProducerId).
    let own = (0..RESERVED_START).contains(&req.producer_id.0);
    if own && req.producer_epoch >= 0 && req.producer_epoch < i16::MAX - 1 {
        return resp
            .with_producer_id(req.producer_id)
            .with_producer_epoch(req.producer_epoch + 1);
    }
    // Cluster mode: every node allocates from its own sequence, so ids carry the node id in
    // their low bits and no two nodes hand out the same one.
    let allocated = broker
        .producer_ids
        .allocate()
        .and_then(|id| match broker.cluster() {
            None => Ok(id),
            Some(_) => id
                .checked_mul(crate::config::MAX_CLUSTER_NODE_ID + 1)
                .and_then(|id| id.checked_add(i64::from(broker.node_id())))
                .ok_or_else(|| crate::topics::TopicError::Storage("producer ids exhausted".into())),
        });
    match allocated {
        Ok(id) => resp.with_producer_id(ProducerId(id)).with_producer_epoch(0),
        Err(e) => {
            tracing::error!("cannot allocate a producer id: {e}");
            resp.with_error_code(code::KAFKA_STORAGE_ERROR)
        }
    }
}
