//! The sequencer's clock: dataflow time in microseconds, following the wall clock but strictly
//! increasing, so every turn of the core loop gets a time of its own.

use dataflows::Time;

pub fn wall_micros() -> Time {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    now.as_micros() as Time
}

#[derive(Debug)]
pub struct SequencerClock {
    last: Time,
}

impl SequencerClock {
    /// Starts after `floor`, the last time a previous run stored, so a restart never reuses a time.
    pub fn starting_after(floor: Time) -> Self {
        SequencerClock { last: floor }
    }

    /// The next time: the wall clock, or one past the previous time if the wall clock has not moved.
    pub fn tick(&mut self) -> Time {
        self.last = wall_micros().max(self.last + 1);
        self.last
    }

    pub fn last(&self) -> Time {
        self.last
    }
}

/// Converts dataflow time to a timestamp for storage and APIs.
pub fn to_datetime(time: Time) -> chrono::DateTime<chrono::Utc> {
    chrono::DateTime::from_timestamp_micros(time as i64).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_strictly_increase_even_ahead_of_the_wall_clock() {
        let far_future = wall_micros() + 10_000_000;
        let mut clock = SequencerClock::starting_after(far_future);
        let a = clock.tick();
        let b = clock.tick();
        assert_eq!(a, far_future + 1);
        assert_eq!(b, far_future + 2);
    }
}
