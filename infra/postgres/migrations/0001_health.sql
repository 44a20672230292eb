-- The relational model of the `health` pipeline.
--
-- Dimensions: US states (FIPS, seeded here), counties and countries (kept
-- up to date from the facts as they arrive). Facts: CDC cases,
-- WHO country-day indicators, outbreak news (current version plus every
-- version seen), model scores. Every fact is keyed by the envelope id, so
-- loading is idempotent; `ingested_at` decides which version of an id wins.
-- `sink_offsets` holds, per consumer group and partition, the next Kafka
-- offset to read: it is written in the same transaction as the rows.

CREATE TABLE dim_state (
    state_code  char(2) PRIMARY KEY,
    state_fips  char(2) NOT NULL UNIQUE,
    name        text    NOT NULL
);

INSERT INTO dim_state (state_code, state_fips, name) VALUES
    ('AL', '01', 'Alabama'),
    ('AK', '02', 'Alaska'),
    ('AZ', '04', 'Arizona'),
    ('AR', '05', 'Arkansas'),
    ('CA', '06', 'California'),
    ('CO', '08', 'Colorado'),
    ('CT', '09', 'Connecticut'),
    ('DE', '10', 'Delaware'),
    ('DC', '11', 'District of Columbia'),
    ('FL', '12', 'Florida'),
    ('GA', '13', 'Georgia'),
    ('HI', '15', 'Hawaii'),
    ('ID', '16', 'Idaho'),
    ('IL', '17', 'Illinois'),
    ('IN', '18', 'Indiana'),
    ('IA', '19', 'Iowa'),
    ('KS', '20', 'Kansas'),
    ('KY', '21', 'Kentucky'),
    ('LA', '22', 'Louisiana'),
    ('ME', '23', 'Maine'),
    ('MD', '24', 'Maryland'),
    ('MA', '25', 'Massachusetts'),
    ('MI', '26', 'Michigan'),
    ('MN', '27', 'Minnesota'),
    ('MS', '28', 'Mississippi'),
    ('MO', '29', 'Missouri'),
    ('MT', '30', 'Montana'),
    ('NE', '31', 'Nebraska'),
    ('NV', '32', 'Nevada'),
    ('NH', '33', 'New Hampshire'),
    ('NJ', '34', 'New Jersey'),
    ('NM', '35', 'New Mexico'),
    ('NY', '36', 'New York'),
    ('NC', '37', 'North Carolina'),
    ('ND', '38', 'North Dakota'),
    ('OH', '39', 'Ohio'),
    ('OK', '40', 'Oklahoma'),
    ('OR', '41', 'Oregon'),
    ('PA', '42', 'Pennsylvania'),
    ('RI', '44', 'Rhode Island'),
    ('SC', '45', 'South Carolina'),
    ('SD', '46', 'South Dakota'),
    ('TN', '47', 'Tennessee'),
    ('TX', '48', 'Texas'),
    ('UT', '49', 'Utah'),
    ('VT', '50', 'Vermont'),
    ('VA', '51', 'Virginia'),
    ('WA', '53', 'Washington'),
    ('WV', '54', 'West Virginia'),
    ('WI', '55', 'Wisconsin'),
    ('WY', '56', 'Wyoming'),
    ('AS', '60', 'American Samoa'),
    ('GU', '66', 'Guam'),
    ('MP', '69', 'Northern Mariana Islands'),
    ('PR', '72', 'Puerto Rico'),
    ('VI', '78', 'U.S. Virgin Islands');

CREATE TABLE dim_county (
    county_fips char(5) PRIMARY KEY,
    state_code  char(2) NOT NULL REFERENCES dim_state (state_code),
    name        text    NOT NULL
);

CREATE TABLE dim_country (
    country_code char(2) PRIMARY KEY,
    name         text NOT NULL,
    who_region   text NOT NULL
        CHECK (who_region IN ('AFRO', 'AMRO', 'EMRO', 'EURO', 'SEARO', 'WPRO', 'OTHER'))
);

CREATE TABLE health_case (
    event_id                         uuid        PRIMARY KEY,
    row_id                           text        NOT NULL,
    case_month                       date        NOT NULL,
    res_state                        char(2)     NOT NULL REFERENCES dim_state (state_code),
    county_fips                      char(5)     REFERENCES dim_county (county_fips),
    age_group                        text        NOT NULL,
    sex                              text        NOT NULL,
    race                             text        NOT NULL,
    ethnicity                        text        NOT NULL,
    case_positive_specimen_interval  integer,
    case_onset_interval              integer,
    process                          text        NOT NULL,
    exposure_yn                      text        NOT NULL,
    current_status                   text        NOT NULL,
    symptom_status                   text        NOT NULL,
    hosp_yn                          text        NOT NULL,
    icu_yn                           text        NOT NULL,
    death_yn                         text        NOT NULL,
    underlying_conditions_yn         text        NOT NULL,
    source                           text        NOT NULL,
    occurred_at                      timestamptz NOT NULL,
    ingested_at                      timestamptz NOT NULL
);
CREATE INDEX health_case_state_month ON health_case (res_state, case_month);

CREATE TABLE country_day (
    event_id           uuid        PRIMARY KEY,
    country_code       char(2)     NOT NULL REFERENCES dim_country (country_code),
    date_reported      date        NOT NULL,
    new_cases          bigint,
    cumulative_cases   bigint      NOT NULL CHECK (cumulative_cases >= 0),
    new_deaths         bigint,
    cumulative_deaths  bigint      NOT NULL CHECK (cumulative_deaths >= 0),
    source             text        NOT NULL,
    ingested_at        timestamptz NOT NULL,
    UNIQUE (country_code, date_reported)
);

CREATE TABLE outbreak_news (
    event_id      uuid        PRIMARY KEY,
    url           text        NOT NULL UNIQUE,
    title         text        NOT NULL,
    published_on  date        NOT NULL,
    disease       text        NOT NULL,
    countries     text[]      NOT NULL,
    summary       text        NOT NULL,
    content_hash  char(64)    NOT NULL,
    source        text        NOT NULL,
    ingested_at   timestamptz NOT NULL
);

-- Every version of an article ever seen, by content hash.
CREATE TABLE outbreak_news_version (
    event_id      uuid        NOT NULL,
    content_hash  char(64)    NOT NULL,
    title         text        NOT NULL,
    summary       text        NOT NULL,
    first_seen_at timestamptz NOT NULL,
    PRIMARY KEY (event_id, content_hash)
);

-- Filled by the scorer's topic (health.case_score.v1).
CREATE TABLE case_score (
    event_id       uuid        PRIMARY KEY,
    case_event_id  uuid        NOT NULL,
    model_name     text        NOT NULL,
    model_version  text        NOT NULL,
    score          double precision NOT NULL CHECK (score >= 0 AND score <= 1),
    scored_at      timestamptz NOT NULL,
    ingested_at    timestamptz NOT NULL
);
CREATE INDEX case_score_case ON case_score (case_event_id);

CREATE TABLE sink_offsets (
    consumer_group  text        NOT NULL,
    topic           text        NOT NULL,
    partition       integer     NOT NULL,
    next_offset     bigint      NOT NULL CHECK (next_offset >= 0),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer_group, topic, partition)
);
