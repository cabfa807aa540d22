//! The PostgreSQL cancel keys the gateway hands its clients, and where each one's cancel goes.

use std::collections::HashMap;
use std::sync::Mutex;

use super::pg;

/// Cancel keys handed to PostgreSQL clients, mapped to the real backend's.
#[derive(Default)]
pub(crate) struct CancelRegistry {
    keys: Mutex<HashMap<(i32, i32), pg::CancelTarget>>,
}

impl CancelRegistry {
    pub(crate) fn insert(&self, key: (i32, i32), target: pg::CancelTarget) {
        if let Ok(mut k) = self.keys.lock() {
            k.insert(key, target);
        }
    }

    pub(crate) fn remove(&self, key: (i32, i32)) {
        if let Ok(mut k) = self.keys.lock() {
            k.remove(&key);
        }
    }

    pub(crate) fn get(&self, key: (i32, i32)) -> Option<pg::CancelTarget> {
        self.keys.lock().ok().and_then(|k| k.get(&key).cloned())
    }
}
