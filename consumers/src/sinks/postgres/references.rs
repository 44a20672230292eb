//! The references a case makes, checked before its batch is written.
//!
//! `health_case.res_state` refers to `dim_state`, and `county_fips` to
//! `dim_county`, which the sink fills from the cases that name their
//! county. A case whose state, or unnamed county, the model does not hold
//! would fail the batch's `COPY` and send it down the staged path, split
//! under savepoints until that row is alone: a few such rows per batch
//! cost more than the batch itself. So the sink refuses them up front,
//! with the reason the database would give, and the rest of the batch
//! takes the fast path.
//!
//! The codes known to exist are cached: a state or county is never
//! deleted by the sink, and an unknown code is asked of the database again
//! (one query per batch that holds any), so a state added to `dim_state`
//! while the sink runs is accepted from its next batch on. The foreign
//! keys stay the safety net: a reference deleted between the check and
//! the write is still isolated row by row.

use std::collections::{BTreeMap, BTreeSet, HashSet};

use sqlx::PgPool;
use vigie_core::Event;

use super::{REASON_CONSTRAINT, classify};
use crate::sink::{Accepted, Rejected, SinkError};

/// The states and counties known to be in the model.
#[derive(Debug, Default)]
pub(crate) struct References {
    states: HashSet<String>,
    counties: HashSet<String>,
}

impl References {
    /// The cases of `events` whose state, or unnamed county, the model does
    /// not hold, as refusals naming the missing reference.
    pub(crate) async fn missing(
        &mut self,
        pool: &PgPool,
        events: &[Accepted],
    ) -> Result<Vec<Rejected>, SinkError> {
        let cases = || {
            events.iter().filter_map(|a| match &a.event {
                Event::Case(env) => Some((a.index, &env.data)),
                _ => None,
            })
        };
        let unknown_states: BTreeSet<&str> = cases()
            .map(|(_, c)| c.res_state.as_str())
            .filter(|s| !self.states.contains(*s))
            .collect();
        self.states.extend(
            existing(
                pool,
                "SELECT state_code::text FROM dim_state WHERE state_code = ANY($1::text[])",
                unknown_states,
            )
            .await?,
        );
        // Counties the batch itself creates: named, of a known state.
        let named: BTreeSet<&str> = cases()
            .filter(|(_, c)| c.res_county.is_some() && self.states.contains(c.res_state.as_str()))
            .filter_map(|(_, c)| c.county_fips_code.as_ref().map(|f| f.as_str()))
            .collect();
        let unknown_counties: BTreeSet<&str> = cases()
            .filter(|(_, c)| c.res_county.is_none())
            .filter_map(|(_, c)| c.county_fips_code.as_ref().map(|f| f.as_str()))
            .filter(|f| !named.contains(f) && !self.counties.contains(*f))
            .collect();
        self.counties.extend(
            existing(
                pool,
                "SELECT county_fips::text FROM dim_county WHERE county_fips = ANY($1::text[])",
                unknown_counties,
            )
            .await?,
        );
        let mut refused = BTreeMap::new();
        for (index, c) in cases() {
            let state = c.res_state.as_str();
            let error = if !self.states.contains(state) {
                format!(
                    "res_state \"{state}\" is not a state of dim_state \
                     (foreign key health_case_res_state_fkey)"
                )
            } else {
                match (&c.county_fips_code, &c.res_county) {
                    (Some(f), None)
                        if !named.contains(f.as_str()) && !self.counties.contains(f.as_str()) =>
                    {
                        format!(
                            "county_fips \"{}\" is not a county of dim_county and the case \
                             names none (foreign key health_case_county_fips_fkey)",
                            f.as_str()
                        )
                    }
                    _ => continue,
                }
            };
            refused.insert(
                index,
                Rejected {
                    index,
                    reason: REASON_CONSTRAINT,
                    error,
                },
            );
        }
        Ok(refused.into_values().collect())
    }
}

/// Those of `codes` that `sql` (`... = ANY($1::text[])`) finds; no round
/// trip when there are none.
async fn existing(
    pool: &PgPool,
    sql: &'static str,
    codes: BTreeSet<&str>,
) -> Result<Vec<String>, SinkError> {
    if codes.is_empty() {
        return Ok(Vec::new());
    }
    let codes: Vec<&str> = codes.into_iter().collect();
    sqlx::query_scalar(sql)
        .bind(&codes)
        .fetch_all(pool)
        .await
        .map_err(classify)
}
