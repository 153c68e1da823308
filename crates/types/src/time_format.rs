//! Timestamps: UTC, RFC 3339 with microseconds, so that their text sorts like time on every
//! backend (they are stored as TEXT in SQLite and PostgreSQL alike).

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;
use time::{OffsetDateTime, UtcOffset, format_description::well_known::Rfc3339};

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(OffsetDateTime);

const FORMAT: &[time::format_description::BorrowedFormatItem<'static>] = time::macros::format_description!(
    "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:6]Z"
);

impl Timestamp {
    pub fn now() -> Self {
        let now = OffsetDateTime::now_utc();
        // Truncate to what the text form keeps, so a value survives a round trip unchanged.
        let micros = now.microsecond();
        Timestamp(now.replace_microsecond(micros).expect("valid microsecond"))
    }

    pub fn parse(s: &str) -> Result<Self, time::error::Parse> {
        let t = OffsetDateTime::parse(s, &Rfc3339)?.to_offset(UtcOffset::UTC);
        let micros = t.microsecond();
        Ok(Timestamp(
            t.replace_microsecond(micros).expect("valid microsecond"),
        ))
    }

    /// A point in time from elsewhere (e.g. a host's log line), in UTC, truncated to the
    /// microseconds the text form keeps.
    pub fn from_datetime(t: OffsetDateTime) -> Self {
        let t = t.to_offset(UtcOffset::UTC);
        let micros = t.microsecond();
        Timestamp(t.replace_microsecond(micros).expect("valid microsecond"))
    }

    pub fn unix_millis(&self) -> i128 {
        self.0.unix_timestamp_nanos() / 1_000_000
    }

    pub fn inner(&self) -> OffsetDateTime {
        self.0
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0.format(FORMAT).map_err(|_| fmt::Error)?)
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Timestamp::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// In the API description: an RFC 3339 date-time string (always UTC, microseconds).
impl utoipa::PartialSchema for Timestamp {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{KnownFormat, ObjectBuilder, SchemaFormat, Type};
        ObjectBuilder::new()
            .schema_type(Type::String)
            .format(Some(SchemaFormat::KnownFormat(KnownFormat::DateTime)))
            .into()
    }
}

impl utoipa::ToSchema for Timestamp {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_sorts_as_text() {
        let a = Timestamp::now();
        let text = a.to_string();
        assert_eq!(text.len(), "2026-01-01T00:00:00.000000Z".len());
        assert_eq!(Timestamp::parse(&text).unwrap(), a);
        let b = Timestamp::parse("2026-01-01T10:00:00+02:00").unwrap();
        assert_eq!(b.to_string(), "2026-01-01T08:00:00.000000Z");
        assert!(Timestamp::parse("yesterday").is_err());
    }
}
