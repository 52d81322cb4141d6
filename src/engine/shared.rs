//! What the connection loops of one service share (DESIGN.md §20): the snapshot store, the
//! request-id source and the upstream connections. The HTTP/1.1 loop (`fast`) and the HTTP/2
//! loops (`h2`, `stream`) each hold it; nothing here does IO.

use std::sync::Arc;

use crate::path::route::RequestIds;
use crate::snapshot::Store;
use crate::state::upstream::Upstreams;

pub struct Shared {
    pub store: Arc<Store>,
    pub ids: Arc<RequestIds>,
    pub upstreams: Upstreams,
}

impl Shared {
    pub fn new(store: Arc<Store>, ids: Arc<RequestIds>) -> Arc<Shared> {
        Arc::new(Shared {
            store,
            ids,
            upstreams: Upstreams::new(),
        })
    }
}
