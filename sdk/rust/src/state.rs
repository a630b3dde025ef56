//! The subscription's own key-value state, with values stored as JSON text.
//!
//! Reads see the current batch's earlier writes; writes commit with the batch, or not at all.
//! A value that does not decode into the requested type is a non-retryable error naming
//! the key. [`scan`] pages through the host (1000 entries per call) as it is iterated.

use std::marker::PhantomData;
use std::vec;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::HandlerError;
use crate::bindings::eventhost::plugin::host;

/// The most entries the host returns per scan call.
const SCAN_PAGE: u32 = 1000;

/// The most keys one [`get_many`] call may ask for.
pub const MAX_KEYS_PER_GET: usize = 1000;

/// The value of `key` decoded from JSON, or `None` if the key is not set.
pub fn get<T: DeserializeOwned>(key: &str) -> Result<Option<T>, HandlerError> {
    host::state_get(key)?
        .map(|value| decode(key, &value))
        .transpose()
}

/// The values of `keys`, each decoded from JSON, in the order asked (`None`: not set): one
/// host call, and at most one round trip to the store, where [`get`] per key may cost one
/// each. Read a batch's keys up front with it. At most [`MAX_KEYS_PER_GET`] keys per call.
pub fn get_many<T: DeserializeOwned>(keys: &[&str]) -> Result<Vec<Option<T>>, HandlerError> {
    let owned: Vec<String> = keys.iter().map(|&key| key.to_owned()).collect();
    host::state_get_many(&owned)?
        .into_iter()
        .zip(keys)
        .map(|(value, key)| value.map(|value| decode(key, &value)).transpose())
        .collect()
}

/// Sets `key` to `value` encoded as compact JSON.
pub fn set<T: Serialize + ?Sized>(key: &str, value: &T) -> Result<(), HandlerError> {
    let value = serde_json::to_string(value).map_err(|e| {
        HandlerError::permanent(format!("state key {key}: value does not encode: {e}"))
    })?;
    Ok(host::state_set(key, &value)?)
}

/// Deletes `key`; deleting a key that is not set is not an error.
pub fn delete(key: &str) -> Result<(), HandlerError> {
    Ok(host::state_delete(key)?)
}

/// The entries whose key starts with `prefix`, in key order, each value decoded from JSON.
///
/// The iterator yields an error (and then ends) if a host call fails or a value does not
/// decode.
pub fn scan<T: DeserializeOwned>(prefix: &str) -> Scan<T> {
    Scan {
        prefix: prefix.to_string(),
        start_after: None,
        page: Vec::new().into_iter(),
        more: true,
        value: PhantomData,
    }
}

/// The iterator returned by [`scan`].
pub struct Scan<T> {
    prefix: String,
    start_after: Option<String>,
    page: vec::IntoIter<(String, String)>,
    more: bool,
    value: PhantomData<fn() -> T>,
}

impl<T: DeserializeOwned> Iterator for Scan<T> {
    type Item = Result<(String, T), HandlerError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.page.as_slice().is_empty()
            && self.more
            && let Err(e) = self.fetch_page()
        {
            self.more = false;
            return Some(Err(e));
        }
        let (key, value) = self.page.next()?;
        match decode(&key, &value) {
            Ok(value) => Some(Ok((key, value))),
            Err(e) => {
                self.page = Vec::new().into_iter();
                self.more = false;
                Some(Err(e))
            }
        }
    }
}

impl<T> Scan<T> {
    fn fetch_page(&mut self) -> Result<(), HandlerError> {
        let page = host::state_scan(&self.prefix, self.start_after.as_deref(), SCAN_PAGE)?;
        self.more = page.len() == SCAN_PAGE as usize;
        self.start_after = page.last().map(|(key, _)| key.clone());
        self.page = page.into_iter();
        Ok(())
    }
}

fn decode<T: DeserializeOwned>(key: &str, value: &str) -> Result<T, HandlerError> {
    serde_json::from_str(value).map_err(|e| {
        HandlerError::permanent(format!("state key {key}: value does not decode: {e}"))
    })
}
