-- Tailspin Customer360: the database that is NOT READY to migrate, and shows why.
--
-- - interaction_events has no primary key and the default replica identity: once published, every
--   UPDATE or DELETE on it would fail on the source ("does not have a replica identity"). Blocker.
-- - profile_photos points at large objects, which logical replication never carries. Warning.
-- - session_cache is UNLOGGED, so it cannot be published at all. Warning.
-- - customer_summary is a materialized view: its definition is copied, its rows are not. Warning.
-- Load into an empty database; no CREATE DATABASE here, so tests can load it under any name.

CREATE TABLE profiles (
    profile_id   bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    email        text NOT NULL UNIQUE,
    segment      text NOT NULL,
    updated_at   timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE interaction_events (
    occurred_at  timestamptz NOT NULL,
    profile_id   bigint NOT NULL,
    channel      text NOT NULL,
    payload      jsonb NOT NULL DEFAULT '{}'
);

CREATE TABLE profile_photos (
    profile_id   bigint PRIMARY KEY REFERENCES profiles (profile_id),
    photo        oid NOT NULL
);

CREATE UNLOGGED TABLE session_cache (
    session_id   uuid PRIMARY KEY,
    profile_id   bigint NOT NULL,
    expires_at   timestamptz NOT NULL
);

INSERT INTO profiles (email, segment)
SELECT 'person' || n || '@tailspin.example', (ARRAY['new', 'loyal', 'lapsed', 'vip'])[1 + n % 4]
FROM generate_series(1, 300) AS n;

INSERT INTO interaction_events (occurred_at, profile_id, channel, payload)
SELECT timestamptz '2024-06-01 00:00:00+00' + n * interval '11 minutes',
       1 + n % 300,
       (ARRAY['web', 'email', 'store', 'phone'])[1 + n % 4],
       jsonb_build_object('n', n)
FROM generate_series(1, 2000) AS n;

INSERT INTO profile_photos (profile_id, photo)
SELECT n, lo_from_bytea(0, convert_to('photo of profile ' || n, 'UTF8'))
FROM generate_series(1, 5) AS n;

INSERT INTO session_cache (session_id, profile_id, expires_at)
SELECT md5(n::text)::uuid, n, timestamptz '2030-01-01 00:00:00+00'
FROM generate_series(1, 50) AS n;

CREATE MATERIALIZED VIEW customer_summary AS
SELECT p.profile_id, p.segment, count(e.*) AS interactions, max(e.occurred_at) AS last_seen
FROM profiles AS p
LEFT JOIN interaction_events AS e USING (profile_id)
GROUP BY p.profile_id, p.segment;

ANALYZE;
