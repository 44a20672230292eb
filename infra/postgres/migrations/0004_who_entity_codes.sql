-- WHO publishes rows for entities that are not countries (`XXX`:
-- international commercial vessels), with an alpha-3 code of the range ISO
-- 3166 leaves to users. Country codes become up to three letters.
ALTER TABLE country_day DROP CONSTRAINT country_day_country_code_fkey;
ALTER TABLE dim_country ALTER COLUMN country_code TYPE varchar(3);
ALTER TABLE country_day ALTER COLUMN country_code TYPE varchar(3);
ALTER TABLE country_day ADD CONSTRAINT country_day_country_code_fkey
    FOREIGN KEY (country_code) REFERENCES dim_country (country_code);
