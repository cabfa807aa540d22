//! A bound on the logins for one user id that wait for their password check at once.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use haechi_types::{Error, Result};

/// How many logins are in progress per user id (as typed: an unknown id is bounded the same
/// way, so the bound tells nothing about whether the user exists).
#[derive(Default)]
pub(crate) struct LoginSlots {
    in_flight: Arc<Mutex<HashMap<String, u32>>>,
}

/// One login in progress; dropping it frees its slot.
pub(crate) struct Slot {
    in_flight: Arc<Mutex<HashMap<String, u32>>>,
    key: String,
}

impl LoginSlots {
    /// Takes a slot for `key`, or refuses (503) when `max` logins for it are in progress.
    pub(crate) fn enter(&self, key: &str, max: u32) -> Result<Slot> {
        let mut map = self.in_flight.lock().map_err(Error::internal)?;
        let n = map.entry(key.to_owned()).or_insert(0);
        if *n >= max.max(1) {
            return Err(Error::unavailable(
                "too many logins for this user id are in progress; try again in a moment",
            ));
        }
        *n += 1;
        Ok(Slot {
            in_flight: self.in_flight.clone(),
            key: key.to_owned(),
        })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        if let Ok(mut map) = self.in_flight.lock() {
            if let Some(n) = map.get_mut(&self.key) {
                *n -= 1;
                if *n == 0 {
                    map.remove(&self.key);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_per_key_and_frees_on_drop() {
        let slots = LoginSlots::default();
        let a1 = slots.enter("a", 2).unwrap();
        let _a2 = slots.enter("a", 2).unwrap();
        let err = slots.enter("a", 2).err().unwrap();
        assert_eq!(err.code.status(), 503);
        let _b = slots.enter("b", 2).unwrap();
        drop(a1);
        let _a3 = slots.enter("a", 2).unwrap();
        drop(_a3);
        drop(_a2);
        assert!(!slots.in_flight.lock().unwrap().contains_key("a"));
    }
}
