//! hostile-flood: tries to emit 1,000,000 events in one batch, 1,000 per `emit` call.
//!
//! It stops at the first host error and returns it as the batch's error (its message says
//! how many events were accepted first), so the per-batch output cap must end the flood.

use eventhost_sdk::{
    Event, ExpectedVersion, HandlerError, NewEvent, Plugin, PluginInfo, StreamId, Subscription,
    emit,
};

const TOTAL: usize = 1_000_000;
const PER_CALL: usize = 1_000;

struct Flood;

impl Plugin for Flood {
    fn describe() -> PluginInfo {
        PluginInfo::new("hostile-flood", "1.0.0").subscription(Subscription::new("all"))
    }

    fn handle(_subscription: &str, _batch: Vec<Event>) -> Result<(), HandlerError> {
        let stream = StreamId::new("flood", "f-1");
        let wave = (0..PER_CALL)
            .map(|n| NewEvent::json("flood.wave", &n))
            .collect::<Result<Vec<_>, _>>()?;
        for accepted in (0..TOTAL).step_by(PER_CALL) {
            emit(&stream, ExpectedVersion::Any, &wave).map_err(|e| {
                let mut error = HandlerError::from(e);
                error.message = format!("flood stopped after {accepted} events: {}", error.message);
                error
            })?;
        }
        Ok(())
    }
}

eventhost_sdk::export_plugin!(Flood);
