-- health_case.county_fips stays a link to dim_county, without a foreign key:
-- the sink upserts a batch's counties before its cases in the same
-- transaction, so the key always resolves, and the per-row trigger of the
-- foreign key cost a large share of the load time. The state foreign key
-- stays: it is what refuses a case of an unknown state.
ALTER TABLE health_case DROP CONSTRAINT health_case_county_fips_fkey;
